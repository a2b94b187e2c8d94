"""A mirror's record of upstream release channels: per (repository, tag, identity), the
digest that identity was last given. Channel tags are revalidated upstream on every pull
with the client's identity; this record serves only when no upstream answers
(stale-if-error), and marks the tag as a channel so it is never cached as one tag for all."""

from __future__ import annotations

from stablemirror.index.mirror_sql import MirrorChannelTags

__all__ = ["MirrorChannelTags"]  # its SQL lives beside the mirror's other tables
