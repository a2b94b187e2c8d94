"""`stablemirror jobs list`: the index's job queue, read directly (any host that can reach
the index; the server may be running). docs/jobs.md."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stablemirror.cli.options import ConfigOpt, DataDirOpt
from stablemirror.config import load_settings
from stablemirror.index.job_queue import STATES, Job
from stablemirror.server.startup import check_data_dir, configure_command_logging, migrate_index

jobs_app = typer.Typer(help="the persistent job queue (docs/jobs.md)", no_args_is_help=True)


def _when(t: float | None) -> str:
    if t is None:
        return ""
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = t - time.time()
    return f"{stamp} ({'in ' if delta > 0 else ''}{abs(delta):.0f}s{'' if delta > 0 else ' ago'})"


def jobs_table(jobs: list[Job]) -> Table:
    table = Table(title="jobs")
    for column in ("id", "kind", "state", "attempts", "run_at", "owner", "lease expiry",
                   "last error"):
        table.add_column(column, justify="right" if column in ("id", "attempts") else "left")
    for job in jobs:
        expiry = _when(job.lease_expires) if job.state == "running" else ""
        table.add_row(str(job.id), job.kind, job.state, f"{job.attempts}/{job.max_attempts}",
                      _when(job.run_at), job.lease_owner or job.pinned_to or "", expiry,
                      (job.last_error or "")[:80])
    return table


@jobs_app.command("list")
def list_jobs(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    state: Annotated[str | None, typer.Option(
        help=f"only jobs in this state: {', '.join(STATES)}")] = None,
    kind: Annotated[str | None, typer.Option(help="only jobs of this kind")] = None,
    limit: Annotated[int, typer.Option(min=1, help="newest this many")] = 50,
) -> None:
    """The newest jobs: kind, state, attempts, when due, owner and lease, last error."""
    from stablemirror.compose.commands import job_queue_of

    if state is not None and state not in STATES:
        raise typer.BadParameter(f"{state!r}: expected one of {', '.join(STATES)}",
                                 param_hint="--state")
    settings = load_settings(config, data_dir=data_dir)
    configure_command_logging(settings)
    if settings.database_url is None:
        check_data_dir(settings, create=False)  # a mistyped path must not list nothing
    migrate_index(settings)

    async def run() -> list[Job]:
        async with job_queue_of(settings) as queue:
            return await queue.list(state, kind, limit)

    Console(soft_wrap=True).print(jobs_table(asyncio.run(run())))
