"""`audit report`: the records of a time window, plus pull counts per model version
(repository + manifest digest) and per user, as csv, json or a table."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from stablemirror.index.audit_events import OK, AuditRecord

PULL = "manifest.pull"
ROW_FIELDS = ("seq", "time", "actor", "client", "user_agent", "action", "repository",
              "reference", "digest", "result")
VERSION_FIELDS = ("repository", "digest", "references", "pulls", "users", "first", "last")
USER_FIELDS = ("actor", "pulls", "versions", "first", "last")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_when(text: str) -> float:
    """A date (2025-01-31), an ISO time, or a unix time -> unix time (UTC when unzoned)."""
    try:
        return float(text)
    except ValueError:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()


@dataclass(frozen=True)
class Report:
    rows: list[dict[str, Any]]
    by_version: list[dict[str, Any]]
    by_user: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"records": self.rows, "pulls_by_version": self.by_version,
                "pulls_by_user": self.by_user}


def build(records: list[AuditRecord]) -> Report:
    rows: list[dict[str, Any]] = []
    versions: dict[tuple[str, str], dict[str, Any]] = {}
    users: dict[str, dict[str, Any]] = {}
    for r in records:
        e = r.event
        rows.append({"seq": r.seq, "time": iso(e.time), "actor": e.actor or "anonymous",
                     "client": e.client, "user_agent": e.user_agent, "action": e.action,
                     "repository": e.repository, "reference": e.reference,
                     "digest": e.digest, "result": e.result})
        if e.action != PULL or e.result != OK:
            continue
        actor = e.actor or "anonymous"
        v = versions.setdefault((e.repository, e.digest), {
            "repository": e.repository, "digest": e.digest, "references": set(),
            "pulls": 0, "users": set(), "first": e.time, "last": e.time})
        v["pulls"] += 1
        v["references"].add(e.reference)
        v["users"].add(actor)
        v["last"] = max(v["last"], e.time)
        u = users.setdefault(actor, {"actor": actor, "pulls": 0, "versions": set(),
                                     "first": e.time, "last": e.time})
        u["pulls"] += 1
        u["versions"].add(f"{e.repository}@{e.digest}")
        u["last"] = max(u["last"], e.time)
    by_version = [
        {**v, "references": sorted(v["references"]), "users": sorted(v["users"]),
         "first": iso(v["first"]), "last": iso(v["last"])}
        for v in sorted(versions.values(), key=lambda v: (-v["pulls"], v["repository"]))]
    by_user = [
        {**u, "versions": len(u["versions"]), "first": iso(u["first"]), "last": iso(u["last"])}
        for u in sorted(users.values(), key=lambda u: (-u["pulls"], u["actor"]))]
    return Report(rows, by_version, by_user)


def _cell(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2)
    if fmt == "csv":
        # Three tables in one file, each with its own header, separated by a blank line.
        out = io.StringIO()
        for fields, items in ((ROW_FIELDS, report.rows), (VERSION_FIELDS, report.by_version),
                              (USER_FIELDS, report.by_user)):
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(fields)
            for item in items:
                writer.writerow([_cell(item[f]) for f in fields])
            out.write("\n")
        return out.getvalue()
    if fmt == "table":
        console = Console(file=io.StringIO(), width=200, force_terminal=False)
        for title, fields, items in (("audit records", ROW_FIELDS, report.rows),
                                     ("pulls by model version", VERSION_FIELDS,
                                      report.by_version),
                                     ("pulls by user", USER_FIELDS, report.by_user)):
            table = Table(title=title)
            for f in fields:
                table.add_column(f, overflow="fold")
            for item in items:
                table.add_row(*[_cell(item[f]) for f in fields])
            console.print(table)
        assert isinstance(console.file, io.StringIO)
        return console.file.getvalue()
    raise ValueError(f"unknown format {fmt!r}; use csv, json or table")
