"""Command line of release channels: `stablemirror release promote | split | rollback |
history | list | retention`, talking to the release admin API of a running registry
(docs/releases.md).

`HOST/REPO` names the registry and repository as a pull does (`localhost:5000/team/model`);
loopback hosts are spoken to over http, others over https, unless `--scheme` says otherwise
or the argument starts with `http://` / `https://`. Credentials: `--username` (default
admin) with the password in STABLEMIRROR_PASSWORD (else STABLEMIRROR_ADMIN_PASSWORD); none
are sent when neither is set (a registry without --auth).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from typing import Annotated, Any

import aiohttp
import typer
from rich.console import Console
from rich.table import Table

release_app = typer.Typer(help="release channels: promote, gray release, rollback, history",
                          no_args_is_help=True)
console = Console(soft_wrap=True)

SchemeOpt = Annotated[str | None, typer.Option("--scheme", help="http or https")]
UserOpt = Annotated[str, typer.Option("--username", envvar="STABLEMIRROR_USERNAME",
                                      help="login (password: STABLEMIRROR_PASSWORD)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the API's JSON")]
LOOPBACK = ("localhost", "127.", "[::1]")


def split_target(target: str, scheme: str | None) -> tuple[str, str]:
    """`HOST[:PORT]/REPO` (optionally with a scheme) -> (base URL, repository)."""
    given = None
    for prefix in ("http://", "https://"):
        if target.startswith(prefix):
            given, target = prefix[:-3], target[len(prefix):]
    host, sep, repo = target.partition("/")
    if not sep or not host or not repo:
        raise typer.BadParameter(f"{target!r}: use HOST[:PORT]/REPOSITORY")
    chosen = scheme or given or ("http" if host.startswith(LOOPBACK) else "https")
    return f"{chosen}://{host}", repo


def call(target: str, scheme: str | None, username: str, method: str, action: str,
         body: dict[str, Any] | None = None, params: dict[str, str] | None = None) -> Any:
    base, repo = split_target(target, scheme)
    password = (os.environ.get("STABLEMIRROR_PASSWORD")
                or os.environ.get("STABLEMIRROR_ADMIN_PASSWORD"))
    auth = aiohttp.BasicAuth(username, password) if password is not None else None
    url = f"{base}/api/v1/releases/{repo}/{action}"

    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(total=300)
                                         ) as session, session.request(
                method, url, json=body, params=params) as resp:
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, await (resp.json() if "json" in ctype else resp.text())

    try:
        status, doc = asyncio.run(go())
    except aiohttp.ClientError as err:
        console.print(f"[red]error:[/red] {url}: {err}")
        raise typer.Exit(2) from None
    if status >= 400:
        console.print(f"[red]error:[/red] HTTP {status}: {_message(doc)}")
        raise typer.Exit(1)
    return doc


def _message(body: Any) -> str:
    if isinstance(body, dict) and body.get("errors"):
        return "; ".join(_one(e) for e in body["errors"])
    return str(body)[:500]


def _one(err: dict[str, Any]) -> str:
    detail = err.get("detail") or {}
    reason = detail.get("reason") if isinstance(detail, dict) else None
    return f"{err.get('code')}: {reason or err.get('message')}"


def _entries(entries: list[dict[str, Any]]) -> str:
    return ", ".join(f"{e['version']}={e['weight']}" for e in entries) or "-"


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _moved(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(doc))
        return
    console.print(f"{doc['channel']}: {_entries(doc['from'])} -> {_entries(doc['to'])} "
                  f"({doc['action']} by {doc['actor']}{', forced' if doc['forced'] else ''})")


@release_app.command("promote")
def promote(target: str, version: str,
            to: Annotated[str, typer.Option("--to", help="the channel")],
            force: Annotated[bool, typer.Option("--force", help="override the admission "
                                                "rule (audited)")] = False,
            reason: Annotated[str, typer.Option("--reason")] = "",
            scheme: SchemeOpt = None, username: UserOpt = "admin",
            as_json: JsonOpt = False,
            preheat: Annotated[str | None, typer.Option(
                "--preheat", help="then warm these node caches with the version: "
                "HOST:PORT[,...] or @FILE (docs/p2p.md, Preheat)")] = None,
            preheat_percentage: Annotated[float | None, typer.Option(
                help="warm only this share of the --preheat nodes")] = None) -> None:
    """Point a channel at VERSION for all clients: `promote host/team/model 1.2.0 --to stable`."""
    _moved(call(target, scheme, username, "POST", "promote",
                {"version": version, "channel": to, "force": force, "reason": reason}), as_json)
    if preheat is not None:
        from stablemirror.cli.preheat import warm_nodes  # the client side of preheat

        if warm_nodes(f"{target}:{version}", preheat, preheat_percentage, insecure=True):
            raise typer.Exit(2)


@release_app.command("split")
def split(target: str, weights: Annotated[list[str], typer.Argument(help="VERSION=WEIGHT ...")],
          channel: Annotated[str, typer.Option("--channel")],
          force: Annotated[bool, typer.Option("--force")] = False,
          reason: Annotated[str, typer.Option("--reason")] = "",
          scheme: SchemeOpt = None, username: UserOpt = "admin",
          as_json: JsonOpt = False) -> None:
    """Gray release: `release split host/team/model --channel stable 1.1.0=90 1.2.0=10`."""
    parsed: dict[str, str] = {}
    for item in weights:
        version, sep, weight = item.partition("=")
        if not sep or not version:
            raise typer.BadParameter(f"{item!r}: use VERSION=WEIGHT")
        parsed[version] = weight
    _moved(call(target, scheme, username, "POST", "split",
                {"channel": channel, "weights": parsed, "force": force, "reason": reason}),
           as_json)


@release_app.command("rollback")
def rollback(target: str, channel: Annotated[str, typer.Option("--channel")],
             to: Annotated[str | None, typer.Option("--to", help="a named version "
                                                    "instead of the previous entry")] = None,
             reason: Annotated[str, typer.Option("--reason")] = "",
             scheme: SchemeOpt = None, username: UserOpt = "admin",
             as_json: JsonOpt = False) -> None:
    """Move CHANNEL back to its previous entry (or --to VERSION); seen on the next pull."""
    _moved(call(target, scheme, username, "POST", "rollback",
                {"channel": channel, "to": to, "reason": reason}), as_json)


@release_app.command("history")
def history(target: str, channel: Annotated[str | None, typer.Option("--channel")] = None,
            scheme: SchemeOpt = None, username: UserOpt = "admin",
            as_json: JsonOpt = False) -> None:
    """Every move of the repository's channels: who, when, from, to, why."""
    rows = call(target, scheme, username, "GET", "history",
                params={"channel": channel} if channel else None)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"release history of {target}")
    for col in ("when (UTC)", "channel", "action", "who", "from", "to", "reason"):
        table.add_column(col)
    for h in rows:
        action = h["action"] + (" (forced)" if h["forced"] else "")
        table.add_row(_when(h["time"]), h["channel"], action, h["actor"],
                      _entries(h["from"]), _entries(h["to"]), h["reason"])
    console.print(table)


@release_app.command("list")
def list_versions(target: str, scheme: SchemeOpt = None, username: UserOpt = "admin",
                  as_json: JsonOpt = False) -> None:
    """Versions in SemVer order with their channels, floating tags and pull counts."""
    doc = call(target, scheme, username, "GET", "versions")
    if as_json:
        console.print_json(json.dumps(doc))
        return
    table = Table(title=f"versions of {target}")
    for col in ("version", "digest", "channels", "floating", "pulls", "last pulled (UTC)",
                "pushed (UTC)"):
        table.add_column(col, justify="right" if col == "pulls" else "left")
    for v in doc["versions"]:
        channels = ", ".join(f"{c['channel']}" + (f" {c['weight']}%" if c["weight"] != 100
                                                  else "") for c in v["channels"])
        table.add_row(v["semver"], v["digest"][:19], channels or "-",
                      ", ".join(v["floating"]) or "-", str(v["pulls"]),
                      _when(v["last_pulled_at"]), _when(v["pushed_at"]))
    console.print(table)


@release_app.command("retention")
def retention(target: str,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="list only")] = False,
              keep: Annotated[int | None, typer.Option(
                  "--keep", help="newest versions kept per major.minor line")] = None,
              keep_days: Annotated[float | None, typer.Option(
                  "--keep-days", help="keep what was pulled this recently")] = None,
              scheme: SchemeOpt = None, username: UserOpt = "admin",
              as_json: JsonOpt = False) -> None:
    """Apply the namespace's retention to one repository now (--dry-run: what would go)."""
    doc = call(target, scheme, username, "POST", "retention",
               {"dry_run": dry_run, "keep_per_line": keep, "keep_days": keep_days})
    if as_json:
        console.print_json(json.dumps(doc))
        return
    gone = doc.get("would_remove" if dry_run else "removed", [])
    table = Table(title=("would remove" if dry_run else "removed") + f" ({len(gone)})")
    for col in ("version", "digest", "reason"):
        table.add_column(col)
    for r in gone:
        table.add_row(r["version"], r["digest"][:19], r["reason"])
    console.print(table)
