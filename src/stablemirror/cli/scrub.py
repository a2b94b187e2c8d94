"""Command line: `stablemirror scrub`: re-hash stored blobs, quarantine corrupt ones."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from stablemirror.cli.options import ConfigOpt, DataDirOpt, counts_table
from stablemirror.config import load_settings
from stablemirror.server.startup import (
    check_data_dir,
    check_storage,
    configure_command_logging,
    migrate_index,
)


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
    from stablemirror.compose.commands import scrubber

    settings = load_settings(config, data_dir=data_dir)
    configure_command_logging(settings)
    check_data_dir(settings, create=False)  # a mistyped path must not report "all clean"
    check_storage(settings)
    migrate_index(settings)
    budget = (settings.integrity.scrub.rate_bytes_per_second if rate is None
              else rate * 1_000_000)

    async def run() -> int:
        async with scrubber(settings, budget) as scrub:
            report = await scrub.run(older_than=older_than)
        console = Console(soft_wrap=True)
        table = counts_table("scrub", [
            ("blobs verified", str(report.checked)),
            ("ok", str(report.ok)),
            ("corrupt (quarantined)", str(len(report.corrupt))),
            ("healed", str(len(report.healed))),
            ("missing", str(len(report.missing))),
            ("skipped (verified recently)", str(report.skipped)),
            ("bytes hashed", f"{report.bytes_hashed:,}"),
            ("seconds", f"{report.seconds:.2f}")])
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
