"""`pack`: a model directory to a ModelPack artifact in a registry.

1. Plan: walk the directory (sorted, hidden entries and `exclude` globs left out, symlinked
   files packed as their content, symlinked directories not entered), classify each file.
2. Per file, in parallel: one pass over its bytes (models/layer_reader.py) hashes it and,
   for safetensors and GGUF weights, parses the header; a top-level config.json is kept for
   its model_type and quantization method. A malformed header stops the pack with one
   error naming the file. Then HEAD the blob and, only if the registry lacks it, upload
   it (a streamed PUT, reading the file a second time): a pack that was interrupted and is
   run again uploads only what is missing.
3. Config and manifest (models/artifact.py) last, so a tag only ever names a complete set.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from stablemirror.client.registry import RegistryClient
from stablemirror.models.artifact import (
    ConfigHints,
    ModelMeta,
    PackedFile,
    build_config,
    build_manifest,
    hints_from_config_json,
)
from stablemirror.models.classify import Selection, classify, is_excluded
from stablemirror.models.layer_reader import HeaderSniffer, Sink, SmallFileKeeper, read_once
from stablemirror.models.mediatypes import Kind
from stablemirror.models.paths import UnsafePath, safe_parts
from stablemirror.models.weights import HeaderError, WeightInfo, format_of
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest


class PackError(Exception):
    """One line for the user: what is wrong, naming the file."""


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: str
    source: Path
    size: int
    kind: Kind
    untested: bool


class PackProgress(Protocol):
    """What `pack` reports as it goes; calls may come from worker threads."""

    def planned(self, files: Sequence[PlannedFile]) -> None: ...
    def read(self, n: int) -> None: ...
    def sent(self, n: int) -> None: ...
    def finished(self, file: PlannedFile, uploaded: bool) -> None: ...


class NoProgress:
    def planned(self, files: Sequence[PlannedFile]) -> None: ...
    def read(self, n: int) -> None: ...
    def sent(self, n: int) -> None: ...
    def finished(self, file: PlannedFile, uploaded: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class PackResult:
    digest: Digest
    manifest: bytes
    config: bytes
    files: list[PackedFile]
    uploaded: int
    skipped: int
    uploaded_bytes: int


def plan_directory(root: Path, selection: Selection) -> list[PlannedFile]:
    if not root.is_dir():
        raise PackError(f"{root}: not a directory")
    found: list[PlannedFile] = []
    for top, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):  # a symlinked directory is in `dirs`, never entered
            source = Path(top) / name
            rel = source.relative_to(root).as_posix()
            if is_excluded(rel, selection):
                continue
            try:
                safe_parts(rel)
                rel.encode("utf-8")
            except (UnsafePath, UnicodeEncodeError) as e:
                raise PackError(f"{rel!r}: not a portable path: {e}") from None
            try:
                st = source.stat()
            except OSError as e:
                raise PackError(f"{rel}: {e.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                raise PackError(f"{rel}: not a regular file")
            kind, untested = classify(rel, st.st_size, selection)
            found.append(PlannedFile(rel, source, st.st_size, kind, untested))
    found.sort(key=lambda f: f.path.encode("utf-8"))
    if not found:
        raise PackError(f"{root}: no files to pack")
    return found


def analyze_file(f: PlannedFile, extra_sinks: Sequence[Sink] = (),
                 progress: PackProgress | None = None) -> tuple[PackedFile, bytes | None]:
    """One pass over `f`: (its packed form, its bytes if it is a top-level config.json)."""
    hasher = hashlib.sha256()
    sinks: list[Sink] = [hasher.update, *extra_sinks]
    fmt = format_of(f.path) if f.kind == "weight" else None
    sniffer = HeaderSniffer(fmt, f.size) if fmt in ("safetensors", "gguf") else None
    keeper = SmallFileKeeper() if f.path == "config.json" else None
    sinks += [s for s in (sniffer, keeper) if s is not None]
    if progress is not None:
        sinks.append(lambda piece: progress.read(len(piece)))
    try:
        size = read_once(f.source, sinks, expected_size=f.size)
    except OSError as e:
        raise PackError(f"{f.path}: {e.strerror or e}") from None
    weight: WeightInfo | None = WeightInfo(fmt) if fmt else None
    if sniffer is not None:
        try:
            weight = sniffer.result()
        except HeaderError as e:
            raise PackError(f"{f.path}: malformed {e}") from None
    packed = PackedFile(f.path, f.kind, Digest("sha256", hasher.hexdigest()), size,
                        f.untested, weight)
    kept = bytes(keeper.data) if keeper is not None and keeper.data is not None else None
    return packed, kept


class ModelPacker:
    """`extra_sinks(file)`: more consumers of each file's one pass (a chunk indexer)."""

    def __init__(self, client: RegistryClient, *, jobs: int = 4, read_jobs: int = 2,
                 progress: PackProgress | None = None,
                 extra_sinks: Callable[[PlannedFile], Sequence[Sink]] | None = None) -> None:
        self.client = client
        self.extra_sinks = extra_sinks
        self.uploads = asyncio.Semaphore(max(1, jobs))
        self.reads = asyncio.Semaphore(max(1, read_jobs))
        self.progress = progress or NoProgress()

    async def pack(self, directory: Path, repository: str, tag: str, meta: ModelMeta,
                   selection: Selection, *, push: bool = True) -> PackResult:
        planned = plan_directory(directory, selection)
        self.progress.planned(planned)
        results: dict[str, tuple[PackedFile, bytes | None, bool]] = {}
        try:
            async with asyncio.TaskGroup() as group:
                for f in planned:
                    group.create_task(self._one(f, repository, push, results))
        except* Exception as caught:  # the first failure, as itself (one line in the CLI)
            raise first_error(caught) from None
        files = [results[f.path][0] for f in planned]
        kept = next((k for _, k, _ in results.values() if k is not None), None)
        hints = hints_from_config_json(kept) if kept is not None else ConfigHints()
        if meta.name is None:
            meta = replace(meta, name=repository.rsplit("/", 1)[-1])
        config = build_config(meta, files, hints)
        manifest = build_manifest(config, files, meta.created)
        if push:
            await self.client.push_blob(repository, config)
            await self.client.put_manifest(repository, tag, manifest, mt.OCI_MANIFEST)
        uploaded = [p for p, _, up in results.values() if up]
        return PackResult(Digest.of(manifest), manifest, config, files, len(uploaded),
                          len(files) - len(uploaded), sum(p.size for p in uploaded))

    async def _one(self, f: PlannedFile, repository: str, push: bool,
                   results: dict[str, tuple[PackedFile, bytes | None, bool]]) -> None:
        async with self.reads:
            extra = self.extra_sinks(f) if self.extra_sinks is not None else ()
            packed, kept = await asyncio.to_thread(analyze_file, f, extra, self.progress)
        upload = push and not await self.client.blob_exists(repository, packed.digest)
        if upload:
            async with self.uploads:
                await self.client.push_blob_file(repository, f.source, packed.digest,
                                                 packed.size, self.progress.sent)
        results[f.path] = (packed, kept, upload)
        self.progress.finished(f, upload)


def first_error(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first failure of a task group, unwrapped: what the user is told."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, Exception)
    return error
