"""Command line: `stablemirror scrub`: re-hash stored blobs, quarantine corrupt ones."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stablemirror.config import load_settings
from stablemirror.server.startup import check_data_dir, configure_command_logging, migrate_index

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="blobs + index live here")]


def scrub(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    rate: Annotated[float | None, typer.Option(
        help="I/O budget in MB/s (10^6 bytes); 0 = unlimited; default from the config")] = None,
    older_than: Annotated[float | None, typer.Option(
        help="only blobs not verified for this many seconds; default: every blob")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="exit with status 2 when corrupt or missing blobs were found")] = False,
) -> None:
    """Re-hash every stored blob; quarantine corrupt ones at once (safe while serving)."""
    from stablemirror.compose.auth import build_audit
    from stablemirror.compose.mirror import build_mirror
    from stablemirror.index.db import Database
    from stablemirror.index.sql import SqlIndex
    from stablemirror.index.sql_trust import SqlTrustIndex
    from stablemirror.integrity.scrub import Quarantine, Scrubber, ServiceHealer
    from stablemirror.metrics import Metrics
    from stablemirror.registry.hosted import HostedRegistry
    from stablemirror.store.filesystem import FilesystemBlobStore

    settings = load_settings(config, data_dir=data_dir)
    configure_command_logging(settings)
    check_data_dir(settings, create=False)  # a mistyped path must not report "all clean"
    migrate_index(settings)
    budget = (settings.integrity.scrub.rate_bytes_per_second if rate is None
              else rate * 1_000_000)

    async def run() -> int:
        db = Database(settings.index_url)
        store = FilesystemBlobStore(settings.data_dir)
        index = SqlIndex(db)
        metrics = Metrics()
        mirror = build_mirror(settings, HostedRegistry(store, index), store, index, db, metrics)
        healer = ServiceHealer(mirror.registry, store) if mirror is not None else None
        try:
            if mirror is not None:
                await mirror.client.start()
            trust_index = SqlTrustIndex(db)
            audit = build_audit(settings, db)  # quarantines are audited like the server's
            quarantine = Quarantine(store, trust_index, metrics,
                                    audit.record if audit is not None else None, healer)
            report = await Scrubber(store, trust_index, quarantine, budget, metrics).run(
                older_than=older_than)
        finally:
            if mirror is not None:
                await mirror.fetches.aclose()
                await mirror.client.close()
            await db.close()
        console = Console(soft_wrap=True)
        table = Table(title="scrub")
        table.add_column("what")
        table.add_column("count", justify="right")
        table.add_row("blobs verified", str(report.checked))
        table.add_row("ok", str(report.ok))
        table.add_row("corrupt (quarantined)", str(len(report.corrupt)))
        table.add_row("healed", str(len(report.healed)))
        table.add_row("missing", str(len(report.missing)))
        table.add_row("skipped (verified recently)", str(report.skipped))
        table.add_row("bytes hashed", f"{report.bytes_hashed:,}")
        table.add_row("seconds", f"{report.seconds:.2f}")
        console.print(table)
        for digest in report.corrupt:
            healed = " (healed)" if digest in report.healed else ""
            console.print(f"CORRUPT {digest}: quarantined{healed}", highlight=False)
        for digest in report.missing:
            console.print(f"MISSING {digest}: indexed but not in the store", highlight=False)
        return 2 if strict and (report.corrupt or report.missing) else 0

    code = asyncio.run(run())
    if code:
        raise typer.Exit(code)
