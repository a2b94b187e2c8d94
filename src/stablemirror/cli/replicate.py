"""`stablemirror replicate status | run RULE [--dry-run]` (docs/replication.md).

With `--url` they go through the admin API of a running server (`run` then enqueues the
rule's job, which the server's queue runs; `--dry-run` answers the plan at once); without
it they read the index directly and `run` runs the rule in this process."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Annotated, Any

import aiohttp
import typer
from rich.console import Console
from rich.table import Table

from stablemirror.cli.options import ConfigOpt, DataDirOpt, UrlOpt, UserOpt
from stablemirror.config import load_settings
from stablemirror.oci.errors import OCIError
from stablemirror.server.startup import check_data_dir, configure_command_logging, migrate_index

replicate_app = typer.Typer(help="replication rules (docs/replication.md)",
                            no_args_is_help=True)


def _out() -> Console:
    return Console(soft_wrap=True)  # made per command: it reads COLUMNS then
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON instead of a table")]


def _ago(t: float | None) -> str:
    return "never" if t is None else f"{_duration(time.time() - t)} ago"


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f}s"
    return f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def status_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="replication")
    table.add_column("rule", no_wrap=True)
    for column in ("trigger", "last run", "result", "lag", "copied", "pending",
                   "current transfers"):
        table.add_column(column)
    for r in rows:
        trigger = ", ".join(filter(None, ["event" if r["trigger"]["event"] else "",
                                          r["trigger"]["cron"] or "", "manual"]))
        result = "failed: " + str(r["last_error"])[:60] if r["last_error"] else (
            "ok" if r["last_success"] else "")
        current = "; ".join(
            f"{c['digest'][7:19]} {100 * c['done'] // max(1, c['total'])}% "
            f"of {_bytes(c['total'])}" for c in r["current"][:4])
        table.add_row(r["rule"], trigger, _ago(r["last_started"]), result,
                      _duration(r["lag_seconds"]),
                      f"{r['artifacts_copied']} / {_bytes(r['bytes_copied'])}",
                      f"{r['pending_artifacts']} / {_bytes(r['pending_bytes'])}",
                      current)
    return table


def _remote(url: str, username: str, method: str, path: str,
            body: dict[str, Any] | None = None) -> Any:
    password = os.environ.get("STABLEMIRROR_PASSWORD") or os.environ.get(
        "STABLEMIRROR_ADMIN_PASSWORD")
    auth = aiohttp.BasicAuth(username, password) if password else None

    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.request(
                method, url.rstrip("/") + path, json=body, auth=auth) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    try:
        status, doc = asyncio.run(go())
    except aiohttp.ClientError as e:
        raise typer.BadParameter(f"{url}: {e}", param_hint="--url") from None
    if status >= 300:
        errors = doc.get("errors") if isinstance(doc, dict) else None
        message = errors[0].get("detail", {}).get("reason") or errors[0].get("message") \
            if errors else doc
        _out().print(f"error: {status}: {message}", markup=False, highlight=False)
        raise typer.Exit(1)
    return doc


def _local_settings(config: Any, data_dir: Any) -> Any:
    settings = load_settings(config, data_dir=data_dir)
    configure_command_logging(settings)
    if settings.database_url is None:
        check_data_dir(settings, create=False)
    migrate_index(settings)
    return settings


@replicate_app.command("status")
def status(data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
           username: UserOpt = "admin", as_json: JsonOpt = False) -> None:
    """Each rule: last run, lag, what it copied, what is pending, transfers in flight."""
    if url is not None:
        rows = _remote(url, username, "GET", "/api/v1/replication/status")["rules"]
    else:
        from stablemirror.compose.replication import replication_commands

        settings = _local_settings(config, data_dir)

        async def read() -> list[dict[str, Any]]:
            async with replication_commands(settings) as parts:
                return await parts.status_rows()

        rows = asyncio.run(read())
    if as_json:
        _out().print_json(json.dumps(rows))
    else:
        _out().print(status_table(rows))


@replicate_app.command("run")
def run(rule: Annotated[str, typer.Argument(help="the rule's name")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be copied "
                                              "and deleted; change nothing")] = False,
        data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
        username: UserOpt = "admin") -> None:
    """Run a rule now (in this process, or enqueued at the server with --url)."""
    if url is not None:
        doc = _remote(url, username, "POST", f"/api/v1/replication/rules/{rule}/run",
                      {"dry_run": dry_run})
        _out().print_json(json.dumps(doc))
        return
    from stablemirror.compose.replication import UnknownRule, replication_commands

    settings = _local_settings(config, data_dir)

    async def go() -> dict[str, Any]:
        async with replication_commands(settings) as parts:
            return (await parts.run_now(rule, dry_run=dry_run)).to_json()

    try:
        doc = asyncio.run(go())
    except UnknownRule as e:
        raise typer.BadParameter(str(e), param_hint="RULE") from None
    except Exception as e:  # the run failed (recorded in its status): one line, exit 1
        text = e.describe() if isinstance(e, OCIError) else str(e)
        _out().print(f"error: rule {rule}: {type(e).__name__}: {text}", markup=False,
                     highlight=False)
        raise typer.Exit(1) from None
    _out().print_json(json.dumps(doc))
