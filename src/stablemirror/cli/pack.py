"""Command line of models: `pack DIR REGISTRY/REPO:TAG`, `unpack REGISTRY/REPO:TAG DIR`.

Both talk to any OCI registry the way `sign` does (cli/trust.py): plain HTTP for localhost
and 127.0.0.0/8, HTTPS otherwise unless `--insecure`; registry credentials from
STABLEMIRROR_REGISTRY_USERNAME / STABLEMIRROR_REGISTRY_PASSWORD. Progress bars go to
stderr; `pack` prints the manifest digest, `unpack` the files written, on stdout. Every
failure is one `error:` line and exit code 1 (docs/models.md).
"""

from __future__ import annotations

import asyncio
import os
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from stablemirror.cli.options import InsecureOpt, registry_credentials
from stablemirror.client.reference import ImageReference, parse_image_reference
from stablemirror.client.registry import RegistryClient
from stablemirror.models.artifact import ModelMeta
from stablemirror.models.chunk_indexes import PackIndexes, push_referrer
from stablemirror.models.classify import Selection
from stablemirror.models.delta_unpack import DeltaUnpackFetcher, old_files
from stablemirror.models.mediatypes import Kind
from stablemirror.models.modelfile import Modelfile, ModelfileError, parse_modelfile
from stablemirror.models.pack import ModelPacker, PackError, PlannedFile
from stablemirror.models.paths import UnsafePath
from stablemirror.models.reading import Layer, NotAModel
from stablemirror.models.unpack import ModelUnpacker
from stablemirror.models.unpack_files import Mismatch
from stablemirror.models.weights import HeaderError
from stablemirror.oci.errors import OCIError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
models_app = typer.Typer(help="models as CNCF ModelPack artifacts", no_args_is_help=True)
Globs = Annotated[list[str] | None, typer.Option(metavar="GLOB")]
Text = Annotated[str | None, typer.Option()]
JobsOpt = Annotated[int, typer.Option("--jobs", min=1, max=64,
                                      help="blobs transferred at once")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="no progress bars")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def _reference(text: str) -> ImageReference:
    try:
        return parse_image_reference(text)
    except OCIError as e:
        raise _fail(e.describe()) from None


def _bars() -> Progress:
    return Progress(TextColumn("{task.description:<10}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                    transient=True)


class _PackBars:
    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.read_task: TaskID = bars.add_task("read", total=None)
        self.push_task: TaskID = bars.add_task("push", total=None)
        self.done = 0
        self.total = 0

    def planned(self, files: Sequence[PlannedFile]) -> None:
        self.total = len(files)
        size = sum(f.size for f in files)
        self.bars.update(self.read_task, total=size)
        self.bars.update(self.push_task, total=size, description=f"push 0/{self.total}")

    def read(self, n: int) -> None:
        self.bars.advance(self.read_task, n)

    def sent(self, n: int) -> None:
        self.bars.advance(self.push_task, n)

    def finished(self, file: PlannedFile, uploaded: bool) -> None:
        self.done += 1
        if not uploaded:  # already in the registry: counts as pushed
            self.bars.advance(self.push_task, file.size)
        self.bars.update(self.push_task, description=f"push {self.done}/{self.total}")


class _UnpackBars:
    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.task: TaskID = bars.add_task("fetch", total=None)
        self.done = 0
        self.total = 0

    def planned(self, layers: Sequence[Layer]) -> None:
        self.total = len(layers)
        self.bars.update(self.task, total=sum(layer.size for layer in layers),
                         description=f"fetch 0/{self.total}")

    def received(self, n: int) -> None:
        self.bars.advance(self.task, n)

    def finished(self, layer: Layer) -> None:
        self.done += 1
        self.bars.update(self.task, description=f"fetch {self.done}/{self.total}")


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    with _bars() as bars:
        yield bars


def _created(given: str | None) -> str | None:
    """`--created` (RFC 3339) or SOURCE_DATE_EPOCH; else no timestamp at all."""
    if given:
        try:
            datetime.fromisoformat(given.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(f"--created {given!r} is not an RFC 3339 date-time") from None
        return given
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            when = datetime.fromtimestamp(int(epoch), UTC)
        except (ValueError, OverflowError):
            raise _fail(f"SOURCE_DATE_EPOCH {epoch!r} is not a number of seconds") from None
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _modelfile(path: Path | None) -> Modelfile:
    if path is None:
        return Modelfile()
    try:
        return parse_modelfile(path.read_text(encoding="utf-8"), str(path))
    except OSError as e:
        raise _fail(f"{path}: {e.strerror}") from None
    except (ModelfileError, UnicodeDecodeError) as e:
        raise _fail(str(e)) from None


@models_app.command("pack")
def pack(
    directory: Annotated[Path, typer.Argument(help="the model directory")],
    target: Annotated[str, typer.Argument(help="REGISTRY/REPO:TAG")],
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Modelfile-like file: NAME, FAMILY, ..., MODEL/CONFIG/DOC/"
        "CODE/DATASET/EXCLUDE globs (docs/models.md)")] = None,
    name: Text = None, family: Text = None, version: Text = None,
    license_: Annotated[list[str] | None, typer.Option(
        "--license", help="SPDX expression; repeatable")] = None,
    author: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
    arch: Text = None, format_: Annotated[str | None, typer.Option("--format")] = None,
    param_size: Text = None, precision: Text = None, quantization: Text = None,
    created: Annotated[str | None, typer.Option(
        help="RFC 3339 time for createdAt (default: SOURCE_DATE_EPOCH, else none)")] = None,
    weights: Globs = None, config_files: Globs = None, docs: Globs = None,
    code: Globs = None, datasets: Globs = None, exclude: Globs = None,
    jobs: JobsOpt = 4, no_progress: NoProgressOpt = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="build and print the digest, push nothing")] = False,
    insecure: InsecureOpt = False,
    chunk_index: Annotated[bool, typer.Option(
        "--chunk-index/--no-chunk-index",
        help="attach chunk indexes of the weight layers as a referrer, so holders of an "
             "earlier version fetch only what changed (docs/delta.md)")] = True,
) -> None:
    """Pack a model directory as a CNCF ModelPack artifact and push it."""
    ref = _reference(target)
    if ref.digest is not None:
        raise _fail("pack needs a tag, not a digest")
    mf = _modelfile(file)
    given: dict[str, Any] = {"name": name, "family": family, "version": version,
                             "architecture": arch, "format": format_,
                             "param_size": param_size, "precision": precision,
                             "quantization": quantization}
    values: dict[str, Any] = {**mf.values, **{k: v for k, v in given.items() if v}}
    values["created"] = _created(created or mf.values.get("created"))
    values["licenses"] = tuple(mf.lists.get("licenses", []) + (license_ or []))
    values["authors"] = tuple(mf.lists.get("authors", []) + (author or []))
    meta = ModelMeta(**values)
    cli_globs: dict[Kind, list[str] | None] = {
        "weight": weights, "weight.config": config_files, "doc": docs, "code": code,
        "dataset": datasets}
    globs = {k: tuple(mf.globs.get(k, []) + (v or [])) for k, v in cli_globs.items()}
    selection = Selection(globs, tuple(mf.exclude + (exclude or [])))

    async def run(bars: Progress | None) -> None:
        async with RegistryClient(ref.registry, insecure=insecure,
                                  credentials=registry_credentials()) as client:
            indexes = PackIndexes() if chunk_index else None
            packer = ModelPacker(client, jobs=jobs,
                                 progress=_PackBars(bars) if bars is not None else None,
                                 extra_sinks=indexes.sinks if indexes is not None else None)
            try:
                result = await packer.pack(directory, ref.repository, ref.tag or "latest",
                                           meta, selection, push=not dry_run)
                # joins the indexer threads: off the event loop
                referrer = (await asyncio.to_thread(indexes.referrer, result.manifest,
                                                    result.files)
                            if indexes is not None else None)
            finally:
                if indexes is not None:
                    indexes.close_on_failure()
            if referrer is not None and not dry_run:
                await push_referrer(client, ref.repository, referrer)
        err.print(f"{len(result.files)} files, {result.uploaded} uploaded "
                  f"({result.uploaded_bytes:,} bytes), {result.skipped} already there",
                  highlight=False)
        out.print(str(result.digest), highlight=False)

    _run(lambda bars: run(bars), not no_progress)


@models_app.command("unpack")
def unpack(
    source: Annotated[str, typer.Argument(help="REGISTRY/REPO[:TAG|@DIGEST]")],
    directory: Annotated[Path, typer.Argument(help="where the files go (created)")],
    filter_: Annotated[list[str] | None, typer.Option(
        "--filter", metavar="GLOB", help="only layers whose path matches; repeatable")
    ] = None,
    jobs: JobsOpt = 4, no_progress: NoProgressOpt = False, insecure: InsecureOpt = False,
    from_: Annotated[Path | None, typer.Option(
        "--from", metavar="OLD_DIR",
        help="an earlier version's files: weight layers are rebuilt from their chunks and "
             "only the changed byte ranges are fetched (docs/delta.md)")] = None,
) -> None:
    """Write a model artifact's files into DIR, each verified (ModelPack, legacy, KitOps)."""
    ref = _reference(source)

    async def run(bars: Progress | None) -> None:
        async with RegistryClient(ref.registry, insecure=insecure,
                                  credentials=registry_credentials()) as client:
            delta = (DeltaUnpackFetcher(client, old_files(from_), directory)
                     if from_ is not None else None)
            unpacker = ModelUnpacker(client, delta, jobs=jobs,
                                     progress=_UnpackBars(bars) if bars is not None else None)
            result = await unpacker.unpack(ref.repository, ref.reference, directory,
                                           filter_ or [])
            if delta is not None:
                delta.cleanup()
                err.print(f"{delta.saved_bytes:,} bytes reused from {from_}",
                          highlight=False)
        for path in result.files:
            out.print(path, highlight=False)
        err.print(f"{len(result.files)} files from {result.layers} layers "
                  f"({result.bytes:,} bytes) of {result.digest}", highlight=False)

    _run(lambda bars: run(bars), not no_progress)


def _run(job: Any, progress: bool) -> None:
    try:
        with _progress(progress) as bars:
            asyncio.run(job(bars))
    except OCIError as e:
        raise _fail(e.describe()) from None
    except (PackError, HeaderError, NotAModel, UnsafePath, Mismatch, tarfile.TarError) as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")) from None
    except KeyboardInterrupt:
        raise _fail("interrupted") from None
