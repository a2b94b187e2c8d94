"""`unpack --from OLD_DIR`: weight layers rebuilt from the chunks of an earlier version's
files where the artifact carries chunk indexes (docs/delta.md), whole otherwise.

The delta fetcher (delta/fetcher.py) assembles a layer into its own resumable file under
DIR/.stablemirror-delta/ and verifies its SHA-256; that file is then copied into unpack's
staged file, which hashes and verifies it again before anything is renamed into place (a
fetcher is never trusted). An interrupted unpack leaves the `.part` there and resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from stablemirror.client.registry import RegistryClient
from stablemirror.delta.fetcher import DeltaLayerFetcher
from stablemirror.delta.referrer import is_weight_layer
from stablemirror.models.reading import Layer
from stablemirror.models.unpack import SequentialWriter, WholeBlobFetcher
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import Descriptor

CACHE_DIR = ".stablemirror-delta"
COPY_PIECE = 4 << 20


def old_files(old_dir: Path) -> list[Path]:
    """Regular files under OLD_DIR (never following symlinks): the chunk sources."""
    if not old_dir.is_dir():
        raise FileNotFoundError(2, "not a directory", str(old_dir))
    return sorted(p for p in old_dir.rglob("*") if p.is_file() and not p.is_symlink())


class DeltaUnpackFetcher:
    def __init__(self, client: RegistryClient, sources: Sequence[Path], directory: Path) -> None:
        self.client = client
        self.sources = list(sources)
        self.cache = directory / CACHE_DIR
        self.whole = WholeBlobFetcher(client)
        self._delta: DeltaLayerFetcher | None = None

    def for_manifest(self, digest: Digest) -> None:
        self._delta = DeltaLayerFetcher(self.client, str(digest), self.sources)

    @property
    def saved_bytes(self) -> int:
        return self._delta.saved_bytes if self._delta is not None else 0

    async def fetch(self, repository: str, layer: Layer, out: SequentialWriter,
                    on_chunk: Callable[[int], None]) -> None:
        descriptor = Descriptor(layer.media_type, layer.digest, layer.size)
        if (self._delta is None or layer.packing != "raw" or not is_weight_layer(descriptor)
                or layer.digest.algorithm != "sha256"):
            await self.whole.fetch(repository, layer, out, on_chunk)
            return
        self.cache.mkdir(exist_ok=True)
        assembled = self.cache / f"{layer.digest.hex}.blob"
        await self._delta.fetch(repository, descriptor, assembled)
        try:
            with open(assembled, "rb") as f:  # noqa: ASYNC230 - pieces read in a thread
                while data := await asyncio.to_thread(f.read, COPY_PIECE):
                    out.write(data)
                    on_chunk(len(data))
        finally:
            assembled.unlink(missing_ok=True)

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):  # still holds a .part: kept for the resume
            self.cache.rmdir()
