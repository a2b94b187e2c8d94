"""`unpack`: a model artifact's files back into a directory, each verified by its digest.

The manifest is read and every path checked before any layer is fetched
(models/reading.py); `--filter` globs pick the layers, and only those are fetched (the
config is not needed to write files, so it is not fetched either). Each layer goes through
a `LayerFetcher` into a staged file that hashes what it is given and is renamed into place
only when size and digest match (models/unpack_files.py). A tar layer (KitOps, or a
ModelPack `.tar`, `.tar+gzip`, `.tar+zstd` layer) is fetched and verified the same way into
a staged file, then extracted member by member through the same checks; links, devices and
fifos in it are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from stablemirror.client.registry import RegistryClient
from stablemirror.models.pack import first_error
from stablemirror.models.paths import UnsafePath, safe_parts
from stablemirror.models.reading import Layer, model_layers, selected
from stablemirror.models.unpack_files import TargetDir
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest


class SequentialWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...


class LayerFetcher(Protocol):
    """Writes one layer's blob into `out`, front to back (the caller hashes and verifies
    what is written, so a fetcher that rebuilds a blob from other sources, e.g. chunks of
    an older copy, plugs in here without being trusted)."""

    def for_manifest(self, digest: Digest) -> None:
        """Told which manifest the layers come from, before the first `fetch`."""

    async def fetch(self, repository: str, layer: Layer, out: SequentialWriter,
                    on_chunk: Callable[[int], None]) -> None: ...


class WholeBlobFetcher:
    """The default: GET the whole blob."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def for_manifest(self, digest: Digest) -> None:
        pass

    async def fetch(self, repository: str, layer: Layer, out: SequentialWriter,
                    on_chunk: Callable[[int], None]) -> None:
        await self.client.download_blob(repository, layer.digest, out, on_chunk)


class UnpackProgress(Protocol):
    def planned(self, layers: Sequence[Layer]) -> None: ...
    def received(self, n: int) -> None: ...
    def finished(self, layer: Layer) -> None: ...


class NoUnpackProgress:
    def planned(self, layers: Sequence[Layer]) -> None: ...
    def received(self, n: int) -> None: ...
    def finished(self, layer: Layer) -> None: ...


@dataclass(frozen=True, slots=True)
class UnpackResult:
    digest: Digest
    layers: int
    files: list[str]
    bytes: int


class ModelUnpacker:
    def __init__(self, client: RegistryClient, fetcher: LayerFetcher | None = None, *,
                 jobs: int = 4, progress: UnpackProgress | None = None) -> None:
        self.client = client
        self.fetcher = fetcher or WholeBlobFetcher(client)
        self.jobs = asyncio.Semaphore(max(1, jobs))
        self.progress = progress or NoUnpackProgress()

    async def unpack(self, repository: str, reference: str, directory: Path,
                     filters: list[str]) -> UnpackResult:
        manifest = await self.client.get_manifest(repository, reference, mt.OCI_MANIFEST)
        layers = selected(model_layers(manifest.content), filters)
        self.fetcher.for_manifest(manifest.digest)
        self.progress.planned(layers)
        # Raw paths are known up front: a tar member may take none of them, nor another's.
        taken = _Taken({"/".join(x.parts) for x in layers if x.packing == "raw"})
        written: list[str] = []
        with TargetDir(directory) as target:
            try:
                async with asyncio.TaskGroup() as group:
                    for layer in layers:
                        group.create_task(self._one(repository, layer, target, written, taken))
            except* Exception as caught:  # the first failure, as itself
                raise first_error(caught) from None
        return UnpackResult(manifest.digest, len(layers), sorted(written),
                            sum(layer.size for layer in layers))

    async def _one(self, repository: str, layer: Layer, target: TargetDir,
                   written: list[str], taken: _Taken) -> None:
        async with self.jobs:
            if layer.packing == "raw":
                with target.staged(layer.parts, layer.digest, layer.size) as out:
                    await self.fetcher.fetch(repository, layer, out, self.progress.received)
                written.append("/".join(layer.parts))
            else:
                await self._tar(repository, layer, target, written, taken)
        self.progress.finished(layer)

    async def _tar(self, repository: str, layer: Layer, target: TargetDir,
                   written: list[str], taken: _Taken) -> None:
        name = f"layer-{layer.digest.hex[:16]}.tar"
        staging = (".stablemirror-unpack", name)
        with target.staged(staging, layer.digest, layer.size) as out:
            await self.fetcher.fetch(repository, layer, out, self.progress.received)
        staging_dir = target.root / staging[0]
        own = target.duplicate()  # taken here, closed by the thread (docs/architecture.md)
        try:
            members = await asyncio.to_thread(_extract, staging_dir / name, layer.packing,
                                              own, taken)
        finally:
            (staging_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another tar layer may still be in it
                staging_dir.rmdir()
        written.extend(members)


def _open_tar(path: Path, packing: str) -> tuple[tarfile.TarFile, IO[bytes]]:
    if packing == "tar+zstd":
        import zstandard

        raw = path.open("rb")
        stream = zstandard.ZstdDecompressor().stream_reader(raw)
        return tarfile.open(fileobj=stream, mode="r|"), raw
    mode = "r|gz" if packing == "tar+gzip" else "r|"
    raw = path.open("rb")
    return tarfile.open(fileobj=raw, mode=mode), raw  # type: ignore[call-overload]


class _Taken:
    """Paths written or reserved, shared by the threads extracting tar layers."""

    def __init__(self, paths: set[str]) -> None:
        self.paths = paths
        self.lock = threading.Lock()

    def claim(self, path: str) -> None:
        with self.lock:
            if path in self.paths:
                raise UnsafePath(path, "named twice")
            self.paths.add(path)


def _extract(archive: Path, packing: str, target: TargetDir, taken: _Taken) -> list[str]:
    """Regular files and directories only, each path checked, none written twice (nor one
    in `taken`). Members carry no digests: the archive's was verified before it was opened.
    Runs in a worker thread, which owns (and closes) `target`."""
    with target:
        tar, raw = _open_tar(archive, packing)
        try:
            return _write_members(tar, target, taken)
        finally:
            tar.close()
            raw.close()


def _write_members(tar: tarfile.TarFile, target: TargetDir, taken: _Taken) -> list[str]:
    out: list[str] = []
    for member in tar:
        if member.isdir():
            os.close(target.open_dir(safe_parts(member.name.rstrip("/"))))
            continue
        if not member.isreg():
            raise UnsafePath(member.name, "tar member is not a regular file or directory")
        parts = safe_parts(member.name)
        path = "/".join(parts)
        taken.claim(path)
        source = tar.extractfile(member)
        assert source is not None
        with target.staged(parts, None, member.size) as dest:
            while piece := source.read(1 << 20):
                dest.write(piece)
        out.append(path)
    return out
