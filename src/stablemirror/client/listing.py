"""The catalog and tag lists, page by page (`n` + the `Link` header), never whole."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from urllib.parse import urljoin

from stablemirror.client.registry import RegistryClient, _error
from stablemirror.oci.errors import NameUnknown

_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
PAGE = 100


async def _pages(client: RegistryClient, url: str, scope: str, key: str
                 ) -> AsyncIterator[list[str]]:
    next_url: str | None = url
    seen = 0
    while next_url is not None and seen < 1_000_000:  # bounded: a Link loop ends somewhere
        seen += 1
        async with await client.send("GET", next_url, scope) as resp:
            if resp.status != 200:
                raise await _error(resp, NameUnknown)
            doc = json.loads(await resp.read())
            link = _NEXT.search(resp.headers.get("Link", ""))
            next_url = urljoin(str(resp.url), link.group(1)) if link else None
        items = doc.get(key) or [] if isinstance(doc, dict) else []
        yield [str(i) for i in items]


async def catalog(client: RegistryClient, page: int = PAGE) -> AsyncIterator[list[str]]:
    async for names in _pages(client, f"{client.base}/v2/_catalog?n={page}",
                              "registry:catalog:*", "repositories"):
        yield names


async def tags(client: RegistryClient, repository: str, page: int = PAGE
               ) -> AsyncIterator[list[str]]:
    """A repository's tags page by page; nothing for a repository that does not exist."""
    try:
        async for names in _pages(client, client.url(repository, f"tags/list?n={page}"),
                                  f"repository:{repository}:pull", "tags"):
            yield names
    except NameUnknown:
        return
