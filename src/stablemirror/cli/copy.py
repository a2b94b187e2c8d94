"""`stablemirror copy SRC DST`: skopeo-style references (`docker://HOST/REPO[:TAG|@DIGEST]`,
`oci:DIR[:TAG]`), byte-for-byte (digests preserved), parallel blobs with progress bars on
stderr, resumable; prints the digest copied on stdout (docs/replication.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated

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
from stablemirror.client.reference import ImageReference
from stablemirror.client.registry import RegistryClient
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import OCIError
from stablemirror.replication.copier import ImageCopier, PlatformMismatch, host_platform
from stablemirror.replication.endpoint import Endpoint, TransferSettings
from stablemirror.replication.layout import LayoutEndpoint
from stablemirror.replication.pacing import RateLimit
from stablemirror.replication.references import TransportReference, parse_transport
from stablemirror.replication.registry_endpoint import RegistryEndpoint

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# A client command: started from cli/entry.py without the server's command groups.
copy_app = typer.Typer(help="copy images between registries", no_args_is_help=True)


@copy_app.callback()
def _group() -> None:
    """A group of one, so that `stablemirror copy` keeps its name (cli/entry.py)."""


def _credentials(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return registry_credentials()
    user, _, password = text.partition(":")
    return user, password


def _endpoint(ref: TransportReference, creds: tuple[str, str] | None, insecure: bool,
              limit: RateLimit | None) -> Endpoint:
    if isinstance(ref, ImageReference):
        return RegistryEndpoint(RegistryClient(ref.registry, insecure=insecure,
                                               credentials=creds, timeout=3600), limit)
    return LayoutEndpoint(ref.directory)


def _repo_ref(ref: TransportReference, default: str | None) -> tuple[str, str | None]:
    """(repository, reference); a layout's repository is its directory (unused)."""
    if isinstance(ref, ImageReference):
        if ref.digest is not None:
            return ref.repository, str(ref.digest)
        return ref.repository, ref.tag or default
    return str(ref.directory), ref.reference or default


class _Bars:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, digest: Digest, done: int, total: int) -> None:
        task = self.tasks.get(str(digest))
        if task is None:
            task = self.progress.add_task(digest.hex[:12], total=total)
            self.tasks[str(digest)] = task
        self.progress.update(task, completed=done)


@copy_app.command(name="copy")
def copy(
    source: Annotated[str, typer.Argument(
        help="docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]")],
    destination: Annotated[str, typer.Argument(help="docker://HOST/REPO[:TAG] or oci:DIR[:TAG]")],
    all_platforms: Annotated[bool, typer.Option(
        "--all", help="an index with every manifest (default: this host's platform)")] = False,
    platform: Annotated[list[str] | None, typer.Option(
        help="OS/ARCH or OS/ARCH/VARIANT to keep of an index (repeatable)")] = None,
    src_creds: Annotated[str | None, typer.Option(help="USER:PASSWORD at the source")] = None,
    dest_creds: Annotated[str | None, typer.Option(
        help="USER:PASSWORD at the destination")] = None,
    parallel_blobs: Annotated[int, typer.Option(min=1, max=64, help="blobs at once")] = 4,
    parallel_streams: Annotated[int, typer.Option(
        min=1, max=64, help="ranged streams per large blob")] = 4,
    chunk_mib: Annotated[int, typer.Option(min=1, max=1024, help="MiB per range and chunk")] = 8,
    bandwidth_limit: Annotated[int, typer.Option(
        help="bytes/second read from the source (0: unlimited)")] = 0,
    no_signatures: Annotated[bool, typer.Option(
        "--no-signatures", help="skip referrers and cosign tags")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bars")] = False,
    insecure: InsecureOpt = False,
) -> None:
    """Copy an image (with its signatures and referrers) from SRC to DST, byte for byte."""
    try:
        src_ref, dst_ref = parse_transport(source), parse_transport(destination)
    except OCIError as e:
        raise typer.BadParameter(str(e.detail.get("reason") or e)) from None
    src_repo, reference = _repo_ref(src_ref, "latest")
    assert reference is not None
    dst_repo, dst_reference = _repo_ref(dst_ref, None if ":" in reference else reference)
    settings = TransferSettings(chunk_size=chunk_mib << 20, parallel_streams=parallel_streams,
                                bandwidth_limit=bandwidth_limit)
    platforms = None if all_platforms else (platform or [host_platform()])

    async def run(bars: _Bars | None) -> Digest:
        limit = RateLimit(bandwidth_limit) if bandwidth_limit else None
        src = _endpoint(src_ref, _credentials(src_creds), insecure, limit)
        dst = _endpoint(dst_ref, _credentials(dest_creds), insecure, None)
        try:
            copier = ImageCopier(src, dst, settings, platforms=platforms,
                                 parallel_blobs=parallel_blobs, progress=bars,
                                 extras=not no_signatures)
            return await copier.copy(src_repo, reference, dst_repo, dst_reference)
        finally:
            await src.close()
            await dst.close()

    try:
        if no_progress:
            digest = asyncio.run(run(None))
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeRemainingColumn(), console=err) as p:
                digest = asyncio.run(run(_Bars(p)))
    except (OCIError, PlatformMismatch) as e:
        text = f"{e.code}: {e.describe()}" if isinstance(e, OCIError) else str(e)
        err.print(f"error: {text}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    out.print(str(digest), markup=False, highlight=False)
