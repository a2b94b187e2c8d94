"""Command line of the audit trail: `audit verify | report | prune` (on a data dir or,
with --url, through a running server's admin API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from stablemirror.cli.auth import console, run, show
from stablemirror.cli.options import ConfigOpt, DataDirOpt, UrlOpt, UserOpt

audit_app = typer.Typer(help="the tamper-evident audit trail", no_args_is_help=True)


@audit_app.command("verify")
def verify(data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
           username: UserOpt = "admin",
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check the hash chain and the retention checkpoints; exit 1 naming the first broken
    record."""
    result = run(data_dir, config, url, username, "audit_verify")
    if as_json:
        show(result)
    elif result["ok"]:
        console.print(f"[green]OK[/green] {result['checked']} record(s) verified "
                      f"(seq {result['first_seq']}..{result['last_seq']}, "
                      f"{result['checkpoints']} checkpoint(s)); head {result['head_hash']}")
    else:
        console.print(f"[red]BROKEN[/red] at record {result['broken_seq']}: "
                      f"{result['reason']} ({result['checked']} record(s) verified before it)")
    raise typer.Exit(0 if result["ok"] else 1)


@audit_app.command("report")
def report(since: Annotated[str | None, typer.Option(help="date or ISO time (UTC)")] = None,
           until: Annotated[str | None, typer.Option(help="date or ISO time, exclusive")] = None,
           repo: Annotated[str | None, typer.Option(help="repository pattern, e.g. team/*")]
           = None,
           user: Annotated[str | None, typer.Option(help="user or robot+NAME")] = None,
           fmt: Annotated[Literal["csv", "json", "table"], typer.Option("--format")] = "table",
           output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
           data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
           username: UserOpt = "admin") -> None:
    """The records of a window plus pull counts per model version and per user."""
    result = run(data_dir, config, url, username, "audit_report", since=since, until=until,
                 repo=repo, user=user, format=fmt)
    text = json.dumps(result, indent=2) if fmt == "json" else str(result)
    if output is not None:
        output.write_text(text)
    else:
        typer.echo(text, nl=not text.endswith("\n"))


@audit_app.command("prune")
def prune(older_than_days: Annotated[float, typer.Option("--older-than-days")],
          data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
          username: UserOpt = "admin") -> None:
    """Prune records older than N days now, leaving a signed checkpoint (the server's
    retention job does this every audit.prune_interval_seconds)."""
    show(run(data_dir, config, url, username, "audit_prune", older_than_days=older_than_days))
