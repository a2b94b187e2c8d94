"""The one part of release channels a mirror whose every repository is proxied needs: tag
listings that include the upstream channels it has served (releases/registry.py does this
and the hosted half; a node's sqlite3 index builds only this, compose/releases.py)."""

from __future__ import annotations

from stablemirror.index.mirror_rows import ChannelTagStore
from stablemirror.registry.forwarding import ForwardingRegistry
from stablemirror.registry.protocol import RegistryService, RequestContext
from stablemirror.releases.rules import merge_tags


class MirrorChannelListing(ForwardingRegistry):
    def __init__(self, inner: RegistryService, channels: ChannelTagStore) -> None:
        super().__init__(inner)
        self.channels = channels

    async def list_tags(self, ctx: RequestContext, repository: str, n: int | None,
                        last: str | None) -> list[str]:
        channels = await self.channels.channels(repository)
        if not channels:
            return await self.inner.list_tags(ctx, repository, n, last)
        tags = await self.inner.list_tags(ctx, repository, None, None)
        return merge_tags(tags, channels, n, last)
