"""The registry-service wrapper that makes channels readable as tags, and version tags
immutable, in hosted namespaces (proxied repositories pass through untouched: their
channels live upstream, see mirror/proxied.py).

* GET/HEAD by tag: a channel resolves, per client identity, to one of its versions; the
  answer is that version's manifest with `Docker-Content-Digest` of it and a
  `Stablemirror-Channel` header (mirrors cache the resolution per identity, not per tag).
* tag listing: channels are listed like tags (in proxied repositories: the upstream
  channels this mirror has served).
* PUT: a release channel is never pushed; an immutable tag never moves; a release version
  moves the floating tags (`1.2`, `1`) it now heads, in the same index transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from stablemirror.index.protocol import RegistryIndex, StoredManifest
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestUnknown
from stablemirror.registry.forwarding import ForwardingRegistry
from stablemirror.registry.protocol import PutManifestResult, RegistryService, RequestContext
from stablemirror.releases.mirror_store import MirrorChannelTags
from stablemirror.releases.rules import merge_tags
from stablemirror.releases.semver import parse_version
from stablemirror.releases.service import ReleaseService


class ReleaseRegistry(ForwardingRegistry):
    def __init__(self, inner: RegistryService, releases: ReleaseService, index: RegistryIndex,
                 is_hosted: Callable[[str], bool]) -> None:
        super().__init__(inner)
        self.releases = releases
        self.index = index
        self.is_hosted = is_hosted
        # Proxied repositories list the upstream channels this mirror has served.
        self.mirror_channels = MirrorChannelTags(releases.db)

    async def get_manifest(self, ctx: RequestContext, repository: str, reference: str
                           ) -> StoredManifest:
        if ":" in reference or not self.is_hosted(repository):
            return await self.inner.get_manifest(ctx, repository, reference)
        # Tags and channels never share a name (a push refuses a channel's name, a channel
        # refuses a tag's): the plain tag is asked first, so a GET of an ordinary tag costs
        # one index read, and only a miss asks whether the name is a channel.
        try:
            found = await self.inner.get_manifest(ctx, repository, reference)
        except ManifestUnknown:
            entry = await self.releases.resolve(ctx, repository, reference)
            if entry is None:
                raise
        else:
            if parse_version(reference) is not None:
                await self.releases.pulled(ctx, repository, None, reference, found.digest)
            return found
        found_by_digest = await self.index.get_manifest(repository, Digest.parse(entry.digest))
        if found_by_digest is None:
            raise ManifestUnknown(repository=repository, reference=reference,
                                  version=entry.version)
        await self.releases.pulled(ctx, repository, reference, entry.version, entry.digest)
        return dataclasses.replace(found_by_digest, channel=reference)

    async def list_tags(self, ctx: RequestContext, repository: str, n: int | None,
                        last: str | None) -> list[str]:
        channels = (await self.releases.channel_names(repository) if self.is_hosted(repository)
                    else await self.mirror_channels.channels(repository))
        if not channels:
            return await self.inner.list_tags(ctx, repository, n, last)
        tags = await self.inner.list_tags(ctx, repository, None, None)
        return merge_tags(tags, channels, n, last)

    async def put_manifest(self, ctx: RequestContext, repository: str, reference: str,
                           body: bytes, content_type: str, extra_tags: list[str]
                           ) -> PutManifestResult:
        tags = ([] if ":" in reference else [reference]) + list(extra_tags)
        if tags and self.is_hosted(repository):
            algorithm = Digest.parse(reference).algorithm if ":" in reference else "sha256"
            digest = str(Digest.of(body, algorithm))
            floating = await self.releases.check_push(repository, tags, digest)
            extra_tags = [*extra_tags, *floating]
        return await self.inner.put_manifest(ctx, repository, reference, body, content_type,
                                             extra_tags)
