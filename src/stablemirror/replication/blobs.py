"""One blob into a registry: parallel ranged reads from the source, one chunked upload at
the destination, resumed from the destination's offset after a cut.

The spec makes a session's chunks arrive in order, so ranges are read ahead: up to
`parallel_streams` ranges of `chunk_size` bytes are in flight while the oldest is PATCHed
(memory is bounded by streams x chunk size; nothing is ever held whole). A PATCH that fails
(a cut, a 5xx, a 416) is followed by a status GET after a backoff: the upload resumes from
the offset the destination acknowledges, so a cut loses at most the chunk in flight. The
bytes are hashed in order as the destination acknowledges them (bytes it acknowledged
without this process having sent them whole are read again for the hash only), and the
final PUT is sent only when that hash is the blob's digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque

import aiohttp

from stablemirror.client.registry import RegistryClient
from stablemirror.client.uploads import (
    cancel_upload,
    finish_upload,
    patch_chunk,
    start_upload,
    upload_offset,
)
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUploadUnknown, DigestInvalid, OCIError, Unavailable
from stablemirror.replication.endpoint import BlobReader, Progress, TransferSettings
from stablemirror.replication.pacing import backoff

log = logging.getLogger("stablemirror.replication")
# Errors after which a transfer is worth another attempt: transport, and answers such as a
# 5xx or 416 that the status GET sorts out. A digest mismatch is not among them.
RETRYABLE = (Unavailable, aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError,
             ConnectionError)


def _retryable(e: BaseException) -> bool:
    return isinstance(e, RETRYABLE) or (isinstance(e, OCIError)
                                        and not isinstance(e, DigestInvalid))


class BlobUpload:
    """The state of one blob's upload into `repository` at `client`."""

    def __init__(self, client: RegistryClient, repository: str, reader: BlobReader,
                 settings: TransferSettings, progress: Progress | None) -> None:
        self.client = client
        self.repository = repository
        self.reader = reader
        self.settings = settings
        self.progress = progress
        self.location: str | None = None
        self.hasher = hashlib.new(reader.digest.algorithm)
        self.hashed = 0  # bytes in `hasher`: a prefix the destination acknowledged
        self.sent = 0  # body bytes sent to the destination, resends included (for tests)
        self.resumes = 0

    async def run(self) -> None:
        s = self.settings
        for attempt in range(1, s.attempts + 1):
            try:
                if self.reader.size <= s.chunk_size:
                    await self._monolithic()
                else:
                    await self._chunked()
                return
            except Exception as e:
                if not _retryable(e) or attempt == s.attempts:
                    await self._abandon()
                    raise
                log.info("blob %s: attempt %d: %s: %s; resuming", self.reader.digest,
                         attempt, type(e).__name__, e)
                await asyncio.sleep(backoff(attempt, s.backoff_seconds, s.backoff_max_seconds))

    async def _monolithic(self) -> None:
        data = await self._read(0, self.reader.size)
        if Digest.of(data, self.reader.digest.algorithm) != self.reader.digest:
            raise DigestInvalid(digest=str(self.reader.digest), reason="source bytes")
        location = await start_upload(self.client, self.repository)
        assert location is not None
        self.sent += len(data)
        await finish_upload(self.client, self.repository, location, self.reader.digest, data)
        self._report(len(data))

    async def _chunked(self) -> None:
        if self.location is None:
            self.location = await start_upload(self.client, self.repository)
            self.hasher, self.hashed = hashlib.new(self.reader.digest.algorithm), 0
            offset = 0
        else:
            try:
                offset, self.location = await upload_offset(self.client, self.repository,
                                                            self.location)
            except BlobUploadUnknown:
                self.location = None  # the session is gone (purged): start over
                raise
            self.resumes += 1
            if offset < self.hashed:  # a destination that forgot acknowledged bytes
                await self._abandon()
                raise Unavailable(reason="upload offset went backwards")
        assert self.location is not None
        if offset > self.hashed:  # acknowledged bytes of a chunk cut in the middle
            self.hasher.update(await self._read(self.hashed, offset))
            self.hashed = offset
        await self._pipeline(offset)
        if self.hasher.hexdigest() != self.reader.digest.hex:
            await self._abandon()
            raise DigestInvalid(digest=str(self.reader.digest), reason="bytes sent")
        await finish_upload(self.client, self.repository, self.location, self.reader.digest)
        self.location = None

    async def _pipeline(self, offset: int) -> None:
        size, chunk = self.reader.size, self.settings.chunk_size
        starts = iter(range(offset, size, chunk))
        ahead: deque[tuple[int, asyncio.Task[bytes]]] = deque()

        def fill() -> None:
            while len(ahead) < max(1, self.settings.parallel_streams):
                start = next(starts, None)
                if start is None:
                    return
                end = min(size, start + chunk)
                ahead.append((start, asyncio.ensure_future(self._read(start, end))))

        try:
            fill()
            while ahead:
                start, task = ahead.popleft()
                data = await task
                fill()
                assert self.location is not None
                self.sent += len(data)
                acked, self.location = await patch_chunk(self.client, self.repository,
                                                         self.location, start, data)
                if acked != start + len(data):
                    raise Unavailable(reason=f"destination acknowledged {acked} bytes, "
                                             f"expected {start + len(data)}")
                self.hasher.update(data)
                self.hashed = acked
                self._report(acked)
        finally:
            for _start, task in ahead:
                task.cancel()
            for _start, task in ahead:
                with contextlib.suppress(BaseException):
                    await task

    async def _read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the source, each range retried on its own."""
        s = self.settings
        for attempt in range(1, s.attempts + 1):
            try:
                data = await self.reader.read_range(start, end)
                if data is None:
                    return await self._read_streamed(start, end)
                return data
            except Exception as e:
                if not _retryable(e) or attempt == s.attempts:
                    raise
                await asyncio.sleep(backoff(attempt, s.backoff_seconds, s.backoff_max_seconds))
        raise AssertionError("unreachable")

    async def _read_streamed(self, start: int, end: int) -> bytes:
        """A source without Range support: read from the first byte, keep [start, end)."""
        buf = bytearray()
        pos = 0
        async for piece in self.reader.stream():
            lo, hi = max(start - pos, 0), min(end - pos, len(piece))
            if lo < hi:
                buf += piece[lo:hi]
            pos += len(piece)
            if pos >= end:
                break
        if len(buf) != end - start:
            raise Unavailable(reason="source blob shorter than its descriptor")
        return bytes(buf)

    async def _abandon(self) -> None:
        if self.location is not None:
            with contextlib.suppress(Exception):
                await cancel_upload(self.client, self.repository, self.location)
            self.location = None

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(self.reader.digest, done, self.reader.size)
