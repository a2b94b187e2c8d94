"""Upload sessions on S3, readable by every replica: the session is its objects.

    uploads/<id>/state      JSON, the one commit point of a PATCH (see UploadState)
    uploads/<id>/tail-<g>-<r>  bytes past the last full part (< part size), generation g
    uploads/<id>/data       the multipart upload's key; the assembled bytes after PUT

Bytes stream into an S3 multipart upload in parts of `part_size` (>= 5 MiB, S3's minimum for
all but the last); what is left of a PATCH past the last full part goes to a tail object and
is prepended to the next PATCH (or becomes the last part at PUT). A PATCH is all-or-nothing:
`state` is replaced only after every part and the tail were written, so a client that
hangs up or a replica killed mid-PATCH leaves the acknowledged size where it was; parts it
uploaded past the recorded ones are never named at completion and are overwritten by the
next PATCH. At PUT the parts are completed onto `data` (never a blob key), hashed, and only
then copied server-side to `blobs/<alg>/<hex>` (store/s3.py): nothing unverified is ever
visible under a blob key.

The digest: hashlib state cannot leave a process, so the replica that received every byte
in order keeps its incremental sha256 (valid while the state's generation is the one it
wrote); any other replica re-reads `data` from S3 at PUT (docs/storage.md has the cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterable
from dataclasses import asdict, dataclass, field
from typing import Any

from stablemirror.oci.digest import Digest, Hasher, new_hasher
from stablemirror.oci.errors import BlobUploadUnknown, DigestInvalid, UploadRangeInvalid
from stablemirror.store.s3_client import S3Conflict, S3Connection, S3Missing

_UPLOAD_ID = re.compile(r"^[a-f0-9]{32}$")
MiB = 1 << 20


@dataclass
class UploadState:
    size: int = 0  # acknowledged bytes: parts + tail
    generation: int = 0  # +1 on every commit; names the tail and dates cached hashes
    multipart: str | None = None  # the S3 multipart upload id, once a part was written
    parts: list[list[Any]] = field(default_factory=list)  # [number, etag, size]
    tail: str | None = None  # key of the tail object
    tail_size: int = 0
    assembled: str | None = None  # ETag of `data` once the parts were completed onto it
    verified: str | None = None  # the digest `data` (that ETag) hashed to
    etag: str | None = None  # of the `state` object this was read from (not stored)

    def encode(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "etag"}).encode()

    @classmethod
    def decode(cls, raw: bytes, etag: str | None) -> UploadState:
        return cls(**json.loads(raw), etag=etag)


@dataclass
class _Hash:
    hasher: Hasher
    generation: int


class S3Uploads:
    def __init__(self, s3: S3Connection, prefix: str, part_size: int) -> None:
        self.s3 = s3
        self.root = f"{prefix}uploads/"
        self.part_size = part_size
        self._hashes: dict[str, _Hash] = {}  # per-process; see the module docstring

    # -- keys and state -----------------------------------------------------------------
    def key(self, upload_id: str, name: str) -> str:
        if not _UPLOAD_ID.match(upload_id):
            raise BlobUploadUnknown(upload=upload_id)
        return f"{self.root}{upload_id}/{name}"

    async def load(self, upload_id: str) -> UploadState:
        key = self.key(upload_id, "state")
        try:
            r = await self.s3.call("get", "get_object", Key=key)
            async with r["Body"] as body:
                raw = await body.read()
        except S3Missing as e:
            raise BlobUploadUnknown(upload=upload_id) from e
        return UploadState.decode(raw, str(r.get("ETag", "")) or None)

    async def save(self, upload_id: str, state: UploadState) -> None:
        """Replace the state, but only the one it was read from (If-Match): of two
        replicas racing on one session, the second to commit loses (UploadRangeInvalid),
        never silently undoes the first."""
        extra = {"IfMatch": state.etag} if state.etag else {}
        try:
            state.etag = await self.s3.put(self.key(upload_id, "state"), state.encode(),
                                           **extra) or None
        except S3Conflict as e:
            current = await self.load(upload_id)
            raise UploadRangeInvalid(upload=upload_id, expected_start=current.size,
                                     reason="busy") from e

    # -- the session's life ----------------------------------------------------------------
    async def create(self, upload_id: str) -> None:
        await self.save(upload_id, UploadState())
        self._hashes[upload_id] = _Hash(new_hasher("sha256"), 0)

    async def size(self, upload_id: str) -> int:
        return (await self.load(upload_id)).size

    async def append(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        state = await self.load(upload_id)
        if state.size != offset:
            raise UploadRangeInvalid(upload=upload_id, expected_start=state.size, start=offset)
        cached = self._hashes.pop(upload_id, None)
        hasher: Hasher | None = None
        if cached is not None and cached.generation == state.generation:
            hasher = cached.hasher.copy()  # the cached one stays valid if this PATCH fails
        elif offset == 0:
            hasher = new_hasher("sha256")
        new = UploadState(**{**asdict(state), "parts": list(state.parts), "verified": None})
        buffer = bytearray()
        if state.assembled is not None:
            await self._reopen(upload_id, new, buffer)
        elif state.tail is not None:
            buffer += await self.s3.read_all(state.tail)
        in_flight: asyncio.Task[None] | None = None
        try:
            async for chunk in chunks:
                if hasher is not None:
                    await asyncio.to_thread(hasher.update, chunk)
                buffer += chunk
                new.size += len(chunk)
                while len(buffer) >= self.part_size:
                    piece = bytes(buffer[: self.part_size])
                    del buffer[: self.part_size]
                    if in_flight is not None:  # one part on the wire while the next arrives
                        await in_flight
                    in_flight = asyncio.ensure_future(self._upload_part(upload_id, new, piece))
            if in_flight is not None:
                await in_flight
                in_flight = None
            new.generation += 1
            new.tail, new.tail_size = None, len(buffer)
            if buffer:
                # a name of its own: a racing PATCH that loses must not overwrite it
                new.tail = self.key(upload_id, f"tail-{new.generation}-{uuid.uuid4().hex[:8]}")
                await self.s3.put(new.tail, bytes(buffer))
            await self.save(upload_id, new)  # now acknowledged
        except BaseException:
            if in_flight is not None:
                in_flight.cancel()
                with contextlib.suppress(BaseException):
                    await in_flight
            raise
        if state.tail is not None and state.tail != new.tail:
            await self.s3.delete(state.tail)
        if hasher is not None:
            self._hashes[upload_id] = _Hash(hasher, new.generation)
        return new.size

    async def _multipart(self, upload_id: str, state: UploadState) -> str:
        if state.multipart is None:
            r = await self.s3.call("create_multipart", "create_multipart_upload",
                                   Key=self.key(upload_id, "data"))
            state.multipart = str(r["UploadId"])
        return state.multipart

    async def _upload_part(self, upload_id: str, state: UploadState, data: bytes) -> None:
        multipart = await self._multipart(upload_id, state)
        number = len(state.parts) + 1
        r = await self.s3.call("upload_part", "upload_part", Key=self.key(upload_id, "data"),
                               UploadId=multipart, PartNumber=number, Body=data)
        state.parts.append([number, str(r["ETag"]), len(data)])

    async def _reopen(self, upload_id: str, state: UploadState, buffer: bytearray) -> None:
        """More bytes after PUT assembled the session (a PUT that failed its digest check
        and is retried with a body): its assembled bytes become the start of a new one."""
        data_key = self.key(upload_id, "data")
        state.assembled, state.multipart, state.parts = None, None, []
        if state.size < 5 * MiB:
            buffer += await self.s3.read_all(data_key)
            return
        multipart = await self._multipart(upload_id, state)
        r = await self.s3.call("upload_part_copy", "upload_part_copy", Key=data_key,
                               UploadId=multipart, PartNumber=1,
                               CopySource={"Bucket": self.s3.bucket, "Key": data_key})
        state.parts.append([1, str(r["CopyPartResult"]["ETag"]), state.size])

    async def assemble(self, upload_id: str, state: UploadState) -> UploadState:
        """Complete the parts (and the tail, as the last part) onto `data`."""
        if state.assembled is not None:
            return state
        data_key = self.key(upload_id, "data")
        new = UploadState(**{**asdict(state), "parts": list(state.parts)})
        if not new.parts:  # small: no multipart upload at all
            tail = b"" if new.tail is None else await self.s3.read_all(new.tail)
            new.assembled = await self.s3.put(data_key, tail)
        else:
            if new.tail is not None:
                await self._upload_part(upload_id, new, await self.s3.read_all(new.tail))
            r = await self.s3.call(
                "complete_multipart", "complete_multipart_upload", Key=data_key,
                UploadId=new.multipart, MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": etag} for n, etag, _ in new.parts]})
            new.assembled = str(r.get("ETag", ""))
            head = await self.s3.head(data_key)
            if head is not None:  # some servers answer the completion with another ETag
                new.assembled = str(head["ETag"])
        old_tail = new.tail
        new.multipart, new.parts, new.tail, new.tail_size = None, [], None, 0
        await self.save(upload_id, new)
        if old_tail is not None:
            await self.s3.delete(old_tail)
        return new

    async def verify(self, upload_id: str, digest: Digest) -> int:
        state = await self.load(upload_id)
        if state.verified == str(digest):
            return state.size
        cached = self._hashes.get(upload_id)
        state = await self.assemble(upload_id, state)
        if (cached is not None and cached.generation == state.generation
                and digest.algorithm == "sha256"):
            actual = cached.hasher.copy().hexdigest()
        else:
            actual = await self._rehash(upload_id, state, digest.algorithm)
        if actual != digest.hex:
            raise DigestInvalid(digest=str(digest), actual=f"{digest.algorithm}:{actual}")
        state.verified = str(digest)
        await self.save(upload_id, state)
        return state.size

    async def _rehash(self, upload_id: str, state: UploadState, algorithm: str) -> str:
        """The session moved between replicas (or the algorithm is not sha256): stream the
        assembled bytes back from S3 and hash them."""
        h = new_hasher(algorithm)
        async for data in self.s3.stream(self.key(upload_id, "data"),
                                         if_match=state.assembled, piece=4 * MiB):
            await asyncio.to_thread(h.update, data)
        return h.hexdigest()

    async def verified(self, upload_id: str, digest: Digest) -> UploadState:
        state = await self.load(upload_id)
        if state.verified != str(digest) or state.assembled is None:
            raise DigestInvalid(digest=str(digest), reason="upload not verified")
        return state

    async def abort(self, upload_id: str) -> None:
        """Drop every object of the session and every multipart upload on its key (also
        ones a replica killed mid-PATCH started but never recorded)."""
        self._hashes.pop(upload_id, None)
        if not _UPLOAD_ID.match(upload_id):
            return
        data_key = self.key(upload_id, "data")
        with contextlib.suppress(S3Missing):
            r = await self.s3.call("list", "list_multipart_uploads", Prefix=data_key)
            for up in r.get("Uploads", []):
                with contextlib.suppress(S3Missing):
                    await self.s3.call("abort_multipart", "abort_multipart_upload",
                                       Key=up["Key"], UploadId=up["UploadId"])
        async for item in self.s3.list(f"{self.root}{upload_id}/"):
            if not str(item["Key"]).endswith("/state"):
                await self.s3.delete(item["Key"])
        await self.s3.delete(self.key(upload_id, "state"))  # last: the session is gone

    async def listing(self) -> list[tuple[str, float]]:
        found = []
        async for item in self.s3.list(self.root):
            rest = str(item["Key"])[len(self.root):]
            upload_id, _, name = rest.partition("/")
            if name == "state" and _UPLOAD_ID.match(upload_id):
                found.append((upload_id, item["LastModified"].timestamp()))
        return found
