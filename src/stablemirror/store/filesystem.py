"""Filesystem blob store: stream to a staging file, verify, fsync, atomic rename.

Layout under the root:
    blobs/<algorithm>/<hex[:2]>/<hex>   committed, verified blobs (one copy per digest)
    uploads/<upload id>/data            staged bytes of an upload session
    uploads/<upload id>/offset          how many of them were acknowledged (see below)
    trash/                              blobs GC is about to remove (see registry/gc.py)
    quarantine/                         blobs that failed verification (integrity/scrub.py)
Upload ids are validated by the HTTP layer (hex), so no path can leave the root.

A PATCH is all-or-nothing, across crashes too: `offset` is replaced (atomically) only after a
chunk was written whole, and bytes past it are from a chunk that never completed (a process
killed mid-PATCH cannot truncate them), so they are cut off before the session is used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from stablemirror.files.create_once import fsync_dir
from stablemirror.oci.digest import Digest, Hasher, new_hasher
from stablemirror.oci.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    StorageFull,
    UploadRangeInvalid,
)

READ_CHUNK = 1 << 20
_UPLOAD_ID = re.compile(r"^[a-f0-9]{32}$")


class _HashState:
    """Incremental digest of an upload, valid while `offset` matches the file size."""

    __slots__ = ("hasher", "offset")

    def __init__(self, hasher: Hasher, offset: int) -> None:
        self.hasher = hasher
        self.offset = offset


def _is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_root = root / "blobs"
        self.upload_root = root / "uploads"
        self.trash_root = root / "trash"
        self.quarantine_root = root / "quarantine"
        for d in (self.blob_root, self.upload_root, self.trash_root, self.quarantine_root):
            d.mkdir(parents=True, exist_ok=True)
        # Per-process incremental hashes; another worker or a restart re-hashes from disk.
        self._hashes: dict[str, _HashState] = {}

    # -- committed blobs -------------------------------------------------------------
    def _path(self, digest: Digest) -> Path:
        return self.blob_root / digest.algorithm / digest.hex[:2] / digest.hex

    async def stat(self, digest: Digest) -> int | None:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, digest: Digest) -> Path | None:
        return self._path(digest)

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            f = open(self._path(digest), "rb")  # noqa: ASYNC230, SIM115 - closed below
        except FileNotFoundError as e:
            raise BlobUnknown(digest=str(digest)) from e
        try:
            async for data in read_range(f, offset, length):
                yield data
        finally:
            f.close()

    async def delete(self, digest: Digest) -> bool:
        try:
            self._path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    async def list_blobs(self) -> AsyncIterator[tuple[Digest, float]]:
        for alg_dir in sorted(self.blob_root.iterdir()):
            for prefix in sorted(alg_dir.iterdir()):
                entries = await asyncio.to_thread(_scan, prefix)
                for entry in entries:
                    try:
                        digest = Digest.parse(f"{alg_dir.name}:{entry.name}")
                    except DigestInvalid:
                        continue
                    yield digest, entry.stat().st_mtime

    async def redirect_url(self, digest: Digest) -> str | None:
        return None  # served from disk with sendfile(2)

    async def aclose(self) -> None:
        return None

    # -- GC support: move aside, then restore or drop ------------------------------
    async def trash(self, digest: Digest, token: str) -> str | None:
        target = self.trash_root / f"{digest.algorithm}-{digest.hex}-{token}"
        try:
            os.rename(self._path(digest), target)
            return str(target)
        except FileNotFoundError:
            return None

    async def restore(self, digest: Digest, trashed: str) -> None:
        dest = self._path(digest)
        with contextlib.suppress(FileNotFoundError):  # already restored or dropped
            if dest.exists():
                os.unlink(trashed)
            else:
                os.rename(trashed, dest)

    async def drop_trashed(self, trashed: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(trashed)

    # -- integrity: corrupt bytes leave blobs/ at once, kept aside for inspection -------
    async def quarantine(self, digest: Digest, token: str) -> str | None:
        target = self.quarantine_root / f"{digest.algorithm}-{digest.hex}-{token}"
        try:
            os.rename(self._path(digest), target)
            return str(target)
        except FileNotFoundError:
            return None

    # -- uploads ------------------------------------------------------------------------
    def _upload_file(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.match(upload_id):
            raise BlobUploadUnknown(upload=upload_id)
        return self.upload_root / upload_id / "data"

    async def upload_create(self, upload_id: str) -> None:
        path = self._upload_file(upload_id)
        made = False
        try:
            path.parent.mkdir()
            made = True
            path.touch()
            _record_offset(path, 0)
        except OSError as e:
            if made:  # half made: the caller has no session to abort
                shutil.rmtree(path.parent, ignore_errors=True)
            if _is_disk_full(e):
                raise StorageFull() from e
            raise
        self._hashes[upload_id] = _HashState(new_hasher("sha256"), 0)

    async def upload_size(self, upload_id: str) -> int:
        """The acknowledged size: never bytes of a chunk still arriving or interrupted."""
        path = self._upload_file(upload_id)
        try:
            return _acknowledged(path, path.stat().st_size)
        except FileNotFoundError as e:
            raise BlobUploadUnknown(upload=upload_id) from e

    def _open_locked(self, upload_id: str, offset: int | None) -> tuple[BinaryIO, int]:
        """The staged file, locked (one writer at a time per upload, across processes), and
        its acknowledged size, with whatever an interrupted chunk left past it cut off."""
        path = self._upload_file(upload_id)
        try:
            f = open(path, "r+b")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError as e:
            raise BlobUploadUnknown(upload=upload_id) from e
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            on_disk = os.fstat(f.fileno()).st_size
            size = _acknowledged(path, on_disk)
            if on_disk != size:
                self._hashes.pop(upload_id, None)
                f.truncate(size)
                _record_offset(path, size)
        except OSError as e:
            f.close()
            raise UploadRangeInvalid(upload=upload_id, start=offset, reason="busy") from e
        return f, size

    async def upload_append(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        path = self._upload_file(upload_id)
        f, size = await asyncio.to_thread(self._open_locked, upload_id, offset)
        if size != offset:  # only at its end
            f.close()
            raise UploadRangeInvalid(upload=upload_id, expected_start=size, start=offset)
        state = self._hashes.pop(upload_id, None)
        if state is not None and state.offset != offset:
            state = None
        if state is None and offset == 0:
            state = _HashState(new_hasher("sha256"), 0)
        written = offset
        try:
            f.seek(offset)
            async for chunk in chunks:
                await asyncio.to_thread(_write_and_hash, f, chunk, state)
                written += len(chunk)
            await asyncio.to_thread(f.flush)
            await asyncio.to_thread(_record_offset, path, written)  # now acknowledged
        except OSError as e:
            await asyncio.to_thread(_truncate_close, f, offset)
            if _is_disk_full(e):
                raise StorageFull(upload=upload_id) from e
            raise
        except BaseException:
            # The chunk did not arrive whole: drop it, the upload stays where it was.
            await asyncio.to_thread(_truncate_close, f, offset)
            raise
        f.close()
        if state is not None:
            state.offset = written
            self._hashes[upload_id] = state
        return written

    async def upload_verify(self, upload_id: str, digest: Digest) -> int:
        path = self._upload_file(upload_id)
        f, size = await asyncio.to_thread(self._open_locked, upload_id, None)
        f.close()
        state = self._hashes.get(upload_id)
        if state is not None and state.offset == size and digest.algorithm == "sha256":
            actual = state.hasher.copy().hexdigest()
        else:
            actual = await asyncio.to_thread(_hash_file, path, digest.algorithm)
        if actual != digest.hex:
            raise DigestInvalid(digest=str(digest), actual=f"{digest.algorithm}:{actual}")
        return size

    async def upload_publish(self, upload_id: str, digest: Digest) -> None:
        try:
            await self.publish_verified(self._upload_file(upload_id), digest)
        except StorageFull as e:
            raise StorageFull(upload=upload_id) from e
        await self.upload_abort(upload_id)

    async def publish_verified(self, path: Path, digest: Digest) -> None:
        """The one way bytes enter blobs/ (pushes and the mirror): fsync the file, rename it
        into place, fsync the directory, so a blob the index names survives a power loss.
        `path` (on the store's filesystem) is consumed; an existing copy wins (same bytes)."""
        try:
            await asyncio.to_thread(_publish, path, self._path(digest))
        except OSError as e:
            if _is_disk_full(e):
                raise StorageFull(digest=str(digest)) from e
            raise

    async def upload_abort(self, upload_id: str) -> None:
        self._hashes.pop(upload_id, None)
        path = self._upload_file(upload_id)
        await asyncio.to_thread(shutil.rmtree, path.parent, True)

    async def list_uploads(self) -> AsyncIterator[tuple[str, float]]:
        for entry in os.scandir(self.upload_root):
            if _UPLOAD_ID.match(entry.name):
                try:
                    yield entry.name, os.stat(os.path.join(entry.path, "data")).st_mtime
                except FileNotFoundError:
                    yield entry.name, entry.stat().st_mtime


async def read_range(f: BinaryIO, offset: int, length: int | None) -> AsyncIterator[bytes]:
    """[offset, offset+length) of an open blob file (to its end for None), piece by piece,
    each read in a thread (a Python file object is safe there: files/fd_jobs.py)."""
    f.seek(offset)
    remaining = length
    while remaining is None or remaining > 0:
        n = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
        data = await asyncio.to_thread(f.read, n)
        if not data:
            break
        if remaining is not None:
            remaining -= len(data)
        yield data


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return list(it)


def _write_and_hash(f: BinaryIO, chunk: bytes, state: _HashState | None) -> None:
    f.write(chunk)
    if state is not None:
        state.hasher.update(chunk)


def _offset_file(staged: Path) -> Path:
    return staged.with_name("offset")


def _record_offset(staged: Path, offset: int) -> None:
    """Acknowledge `offset` bytes (replace, so a crash leaves the old value or the new).
    Not fsynced: it guards against a killed process; after a power loss the staged file may
    be shorter, and then its size wins (see _acknowledged)."""
    tmp = staged.with_name(f"offset.{os.getpid()}.tmp")
    tmp.write_text(str(offset))
    os.replace(tmp, _offset_file(staged))


def _acknowledged(staged: Path, on_disk: int) -> int:
    try:
        recorded = int(_offset_file(staged).read_text())
    except (FileNotFoundError, ValueError):
        return on_disk  # a session staged before offsets were recorded
    return min(recorded, on_disk)


def _truncate_close(f: BinaryIO, offset: int) -> None:
    try:
        f.truncate(offset)
    finally:
        f.close()


def _hash_file(path: Path, algorithm: str) -> str:
    h = new_hasher(algorithm)
    with open(path, "rb") as f:
        while data := f.read(READ_CHUNK):
            h.update(data)
    return h.hexdigest()


def _publish(staged: Path, dest: Path) -> None:
    """fsync the staged bytes, then rename into place; an existing copy wins (same bytes)."""
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _make_durable_dirs(dest.parent)
    if dest.exists():
        staged.unlink(missing_ok=True)
        return
    os.rename(staged, dest)
    fsync_dir(dest.parent)


def _make_durable_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing the parent of every directory created (else a power loss can
    drop the new directory, and the blob renamed into it with it)."""
    if directory.is_dir():
        return
    _make_durable_dirs(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return  # another worker made it; it fsyncs the parent
    fsync_dir(directory.parent)
