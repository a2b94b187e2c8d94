"""Verified reads: `verify_on_read: never | first | always`, per namespace.

* never: local blobs go out with sendfile(2), unhashed (scrub is what checks them).
* first: a blob is hashed while it is served the first time after start-up, or after scrub
  marked earlier verifications stale; later reads in this process use sendfile again.
* always: every read is hashed.

A hashed read reads the whole blob (a Range request hashes around its range), hands each
piece on only once the next one was read, and holds the last piece back until the digest
checked out. On a mismatch the blob is quarantined and the stream raises: the HTTP layer then
drops the connection, so the client sees a short body, never a clean end with wrong bytes.
A blob that is gone because it was quarantined answers BLOB_UNKNOWN saying so, unless a
healer brings it back first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Literal

from stablemirror.index.trust_rows import QUARANTINED, TrustIndex
from stablemirror.integrity.scrub import CHUNK, Quarantine, read_and_hash
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown
from stablemirror.oci.patterns import longest_prefix
from stablemirror.registry.forwarding import ForwardingRegistry
from stablemirror.registry.protocol import BlobSource, RegistryService, RequestContext

VerifyMode = Literal["never", "first", "always"]


def mode_for(repository: str, default: VerifyMode, namespaces: Mapping[str, VerifyMode]
             ) -> VerifyMode:
    """The mode of the longest namespace prefix `repository` starts with, else `default`."""
    best = longest_prefix(repository, namespaces.items(), lambda item: item[0])
    return default if best is None else best[1]


class VerifiedReads(ForwardingRegistry):
    def __init__(self, inner: RegistryService, index: TrustIndex, quarantine: Quarantine,
                 default: VerifyMode = "never",
                 namespaces: Mapping[str, VerifyMode] | None = None) -> None:
        super().__init__(inner)
        self.index = index
        self.quarantine = quarantine
        self.default = default
        self.namespaces = dict(namespaces or {})
        self._verified: dict[str, float] = {}  # digest -> when this process last verified it

    def mode(self, repository: str) -> VerifyMode:
        return mode_for(repository, self.default, self.namespaces)

    async def open_blob(self, ctx: RequestContext, repository: str, digest: str) -> BlobSource:
        try:
            source = await self.inner.open_blob(ctx, repository, digest)
        except BlobUnknown:
            source = await self._after_unknown(ctx, repository, digest)
        mode = self.mode(repository)
        if mode == "never" or source.path is None:
            return source
        if mode == "first" and await self._still_verified(source.digest):
            return source
        path = source.path
        return dataclasses.replace(
            source, path=None,
            open_stream=lambda offset, length: self._stream(ctx, repository, source, path,
                                                            mode, offset, length))

    async def _after_unknown(self, ctx: RequestContext, repository: str, digest: str
                             ) -> BlobSource:
        """Heal a quarantined blob if we can; else say clearly why it is unknown."""
        try:
            d = Digest.parse(digest)
        except Exception:
            raise BlobUnknown(repository=repository, digest=digest) from None
        row = await self.index.integrity(str(d))
        if row is None or row.state != QUARANTINED:
            raise BlobUnknown(repository=repository, digest=digest)
        if await self.quarantine.heal(d, [repository]):
            return await self.inner.open_blob(ctx, repository, digest)
        raise BlobUnknown(repository=repository, digest=digest,
                          reason="quarantined: stored bytes failed verification")

    async def _still_verified(self, digest: Digest) -> bool:
        at = self._verified.get(str(digest))
        if at is None:
            return False
        row = await self.index.integrity(str(digest))
        if row is not None and row.stale_at is not None and row.stale_at > at:
            del self._verified[str(digest)]
            return False
        return True

    async def _stream(self, ctx: RequestContext, repository: str, source: BlobSource,
                      path: Path, mode: VerifyMode, offset: int, length: int | None
                      ) -> AsyncIterator[bytes]:
        digest = source.digest
        end = source.size if length is None else offset + length
        hasher = digest.hasher()
        pos = 0
        held: bytes | None = None  # the last piece, released only after the digest checks
        loop = asyncio.get_running_loop()
        f = await asyncio.to_thread(open, path, "rb")
        # One read ahead: a worker thread reads and hashes the next chunk while this one is
        # sent (hashlib releases the GIL), so hashing and sending overlap on two cores.
        pending = loop.run_in_executor(None, read_and_hash, f, hasher, CHUNK)
        try:
            while data := await pending:
                pending = loop.run_in_executor(None, read_and_hash, f, hasher, CHUNK)
                lo, hi = max(offset, pos), min(end, pos + len(data))
                if lo < hi:
                    if held is not None:
                        yield held
                    whole = (lo, hi) == (pos, pos + len(data))
                    held = data if whole else data[lo - pos : hi - pos]
                pos += len(data)
        finally:
            if not pending.done():
                with contextlib.suppress(Exception):
                    await pending
            f.close()
        actual = hasher.hexdigest()
        if actual != digest.hex or pos != source.size:
            await self.quarantine.corrupt(digest, actual, "read", ctx, repository)
            self._verified.pop(str(digest), None)
            # Mid-body: the HTTP layer (api/ranges.py) turns any error into a dropped
            # connection; a caller reading the stream itself sees the blob is gone.
            raise BlobUnknown(repository=repository, digest=str(digest),
                              reason="stored bytes failed verification; quarantined")
        if mode == "first" and str(digest) not in self._verified:
            await self.index.record_verified(str(digest), pos)
        self._verified[str(digest)] = time.time()
        if held is not None:
            yield held
