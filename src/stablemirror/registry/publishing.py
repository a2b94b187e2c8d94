"""A registry service wrapper that publishes one RegistryEvent per change, after the inner
service committed it and before the client hears back (docs/notifications.md): manifest
pushes (one event per tag; one untagged event by digest), manifest and tag deletes, and
blob mounts. A change that failed publishes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from stablemirror.events.model import EventAction, EventSink, RegistryEvent
from stablemirror.oci.errors import OCIError
from stablemirror.oci.names import parse_reference
from stablemirror.registry.forwarding import ForwardingRegistry
from stablemirror.registry.protocol import PutManifestResult, RegistryService, RequestContext


def _media_type(body: bytes, content_type: str) -> str:
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) and declared else content_type


class PublishingRegistry(ForwardingRegistry):
    def __init__(self, inner: RegistryService, sink: EventSink,
                 is_hosted: Callable[[str], bool] = lambda _repository: True) -> None:
        """`is_hosted`: False for repositories a mirror proxies (writes there are refused,
        and looking a tag up would ask the upstream)."""
        super().__init__(inner)
        self.sink = sink
        self.is_hosted = is_hosted

    async def _publish(self, ctx: RequestContext, action: EventAction, repository: str, *,
                       digest: str = "", media_type: str = "", size: int = 0, tag: str = ""
                       ) -> None:
        await self.sink.accept(RegistryEvent(
            action=action, repository=repository, digest=digest, media_type=media_type,
            size=size, tag=tag, actor=ctx.actor or "", client=ctx.client,
            user_agent=ctx.user_agent, request_id=ctx.request_id))

    async def put_manifest(self, ctx: RequestContext, repository: str, reference: str,
                           body: bytes, content_type: str, extra_tags: list[str]
                           ) -> PutManifestResult:
        result = await self.inner.put_manifest(ctx, repository, reference, body,
                                               content_type, extra_tags)
        by_tag = [] if ":" in reference else [reference]  # a digest has a colon, a tag never
        media_type = _media_type(body, content_type)
        # A tag moved to another manifest is a push of it too: receivers compare digests.
        for tag in [*by_tag, *extra_tags] or [""]:
            await self._publish(ctx, "push", repository, digest=str(result.digest),
                                media_type=media_type, size=len(body), tag=tag)
        return result

    async def delete_manifest(self, ctx: RequestContext, repository: str, reference: str
                              ) -> None:
        ref = parse_reference(reference)
        if isinstance(ref, str):  # a tag: say which manifest it named, if we can tell
            digest = (await self._tagged(ctx, repository, reference)
                      if self.is_hosted(repository) else "")
            await self.inner.delete_manifest(ctx, repository, reference)
            await self._publish(ctx, "delete", repository, tag=reference, digest=digest)
            return
        await self.inner.delete_manifest(ctx, repository, reference)
        await self._publish(ctx, "delete", repository, digest=str(ref))

    async def _tagged(self, ctx: RequestContext, repository: str, tag: str) -> str:
        try:  # a HEAD: not a pull (no audit record, no pull count)
            found = await self.inner.get_manifest(replace(ctx, method="HEAD"), repository, tag)
        except OCIError:
            return ""
        return str(found.digest)

    async def mount_blob(self, ctx: RequestContext, repository: str, digest: str,
                         source: str | None) -> bool:
        mounted = await self.inner.mount_blob(ctx, repository, digest, source)
        if mounted:
            await self._publish(ctx, "mount", repository, digest=digest,
                                media_type="application/octet-stream")
        return mounted
