"""Command line: `stablemirror serve | gc`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stablemirror.config import Settings, load_settings

app = typer.Typer(help="stablemirror: OCI registry and pull-through mirror", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="blobs + index live here")]


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def serve(
    listen: Annotated[str | None, typer.Option(help="HOST:PORT (default 127.0.0.1:5000)")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    workers: Annotated[int | None, typer.Option(help="processes; default: CPU count")] = None,
) -> None:
    """Run the registry."""
    from stablemirror.server import serve as run

    settings = load_settings(config, listen=listen, data_dir=data_dir, workers=workers)
    _logging(settings)
    run(settings)


@app.command()
def gc(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    grace: Annotated[float | None, typer.Option(help="seconds a fresh blob is safe")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report only")] = False,
) -> None:
    """Online garbage collection: safe while the server runs; reports what it freed."""
    from stablemirror.index.db import Database
    from stablemirror.index.migrate import upgrade
    from stablemirror.index.sql import SqlIndex
    from stablemirror.services.gc import GarbageCollector
    from stablemirror.store.filesystem import FilesystemBlobStore

    settings = load_settings(config, data_dir=data_dir)
    _logging(settings)
    upgrade(settings.index_url)

    async def run() -> None:
        index = SqlIndex(Database(settings.index_url))
        try:
            collector = GarbageCollector(
                FilesystemBlobStore(settings.data_dir), index,
                settings.gc.grace_seconds if grace is None else grace,
                settings.gc.upload_max_age_seconds)
            report = await collector.run(dry_run=dry_run)
        finally:
            await index.close()
        table = Table(title="garbage collection" + (" (dry run)" if dry_run else ""))
        table.add_column("what")
        table.add_column("count", justify="right")
        table.add_row("blobs deleted", str(report.blobs_deleted))
        table.add_row("orphan files deleted", str(report.orphan_files_deleted))
        table.add_row("stale uploads removed", str(report.uploads_removed))
        table.add_row("bytes freed", f"{report.bytes_freed:,}")
        Console().print(table)

    asyncio.run(run())


def main() -> None:
    app()
