"""Command line: `stablemirror serve | gc | status`.

A start-up mistake (a setting, the listen address, the data dir) is one line on stderr,
`stablemirror: error: ...`, and a non-zero exit (2 for settings, 1 for the rest): never a
traceback (main below).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer
from rich.console import Console

from stablemirror.cli.audit import audit_app
from stablemirror.cli.auth import auth_app, policy_app, robot_app, role_app, user_app
from stablemirror.cli.copy import copy as copy_command
from stablemirror.cli.entry import run_one_line
from stablemirror.cli.jobs import jobs_app
from stablemirror.cli.options import ConfigOpt, DataDirOpt, counts_table
from stablemirror.cli.pack import pack as pack_command
from stablemirror.cli.pack import unpack as unpack_command
from stablemirror.cli.preheat import preheat_command
from stablemirror.cli.release import release_app
from stablemirror.cli.replicate import replicate_app
from stablemirror.cli.scan import scan as scan_command
from stablemirror.cli.scan import scan_exempt as scan_exempt_command
from stablemirror.cli.scrub import scrub as scrub_command
from stablemirror.cli.serve import SERVE_HELP, serve
from stablemirror.cli.status import status as status_command
from stablemirror.cli.trust import key_app, trust_app
from stablemirror.cli.trust import sign as sign_command
from stablemirror.cli.trust import verify as verify_command
from stablemirror.config import Settings, SettingsError, load_settings
from stablemirror.server.startup import (
    StartupError,
    check_data_dir,
    check_storage,
    configure_command_logging,
    migrate_index,
)

app = typer.Typer(help="stablemirror: OCI registry and pull-through mirror", no_args_is_help=True)


# The one command in its own module, parsed by argparse, so that cli/entry.py can run it
# without this module or typer (cli/serve.py); listed here for `stablemirror --help`.
@app.command(name="serve", help=f"{SERVE_HELP} Options: stablemirror serve --help",
             add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve_command(ctx: typer.Context) -> None:
    serve(list(ctx.args))


@app.command()
def gc(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    grace: Annotated[float | None, typer.Option(help="seconds a fresh blob is safe")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report only")] = False,
) -> None:
    """Online garbage collection: safe while the server runs; reports what it freed."""
    from stablemirror.compose.commands import garbage_collector

    settings = load_settings(config, data_dir=data_dir)
    configure_command_logging(settings)
    check_data_dir(settings, create=False)  # a mistyped path must not report "all clean"
    check_storage(settings)
    migrate_index(settings)

    async def run() -> None:
        async with garbage_collector(settings, grace) as collector:
            report = await collector.run(dry_run=dry_run)
        # A dry run deletes nothing: its rows say what a real run would do.
        rows = [("blobs", "deleted", "would delete", report.blobs_deleted),
                ("orphan files", "deleted", "would delete", report.orphan_files_deleted),
                ("stale uploads", "removed", "would remove", report.uploads_removed),
                ("abandoned mirror transfers", "removed", "would remove",
                 report.partial_fetches_removed),
                ("chunk rows of blobs not stored", "forgotten", "would forget",
                 report.chunk_rows_swept)]
        counts = [(f"{would}: {what}" if dry_run else f"{what} {done}", f"{count:,}")
                  for what, done, would, count in rows]
        counts.append(("would free: bytes" if dry_run else "bytes freed",
                       f"{report.bytes_freed:,}"))
        table = counts_table("garbage collection" + (" (dry run)" if dry_run else ""), counts)
        Console().print(table)
        if not dry_run:
            _record_gc(settings, report.bytes_freed)

    asyncio.run(run())


def _record_gc(settings: Settings, freed: int) -> None:
    """Add to gc_freed_bytes_total of a server running on this data dir: its workers and
    this process share its metrics directory (server/metrics_dir.py)."""
    from stablemirror.metrics import Metrics, prepare_multiprocess_dir
    from stablemirror.server.metrics_dir import running_server_dir

    directory = running_server_dir(settings.data_dir)
    if freed <= 0 or directory is None:
        return
    try:
        prepare_multiprocess_dir(directory, clean=False)
        Metrics(multiprocess_dir=directory).gc_freed_bytes(freed)
    except OSError as exc:
        logging.getLogger("stablemirror.gc").warning("freed bytes not recorded: %s", exc)


app.command(name="status")(status_command)
app.command(name="preheat")(preheat_command)
# Integrity and trust (cli/trust.py, cli/scrub.py).
app.add_typer(key_app, name="key")
app.add_typer(trust_app, name="trust")
app.command(name="sign")(sign_command)
app.command(name="verify")(verify_command)
app.command(name="scrub")(scrub_command)
app.command(name="scan")(scan_command)
app.command(name="scan-exempt")(scan_exempt_command)
# Access control and audit (cli/auth.py, cli/audit.py).
app.add_typer(user_app, name="user")
app.add_typer(robot_app, name="robot")
app.add_typer(role_app, name="role")
app.add_typer(policy_app, name="policy")
app.add_typer(auth_app, name="auth")
app.add_typer(audit_app, name="audit")
# Release channels (cli/release.py).
app.add_typer(release_app, name="release")
# Models as ModelPack artifacts (cli/pack.py).
app.command(name="pack")(pack_command)
app.command(name="unpack")(unpack_command)
app.add_typer(jobs_app, name="jobs")
# Replication (cli/copy.py, cli/replicate.py).
app.command(name="copy")(copy_command)
app.add_typer(replicate_app, name="replicate")


def main() -> None:
    run_one_line(app, known=(SettingsError, StartupError))
