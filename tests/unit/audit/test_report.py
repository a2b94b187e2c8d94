"""`audit report`: pull counts per model version and per user, in csv, json and table."""

from __future__ import annotations

import csv
import io
import json

import pytest

from stablemirror.audit.report import build, parse_when, render
from stablemirror.index.audit_events import AuditEvent, AuditRecord

T0 = parse_when("2026-03-01T12:00:00Z")


def rec(seq: int, action: str, actor: str, digest: str, reference: str = "v1",
        result: str = "ok") -> AuditRecord:
    e = AuditEvent(action=action, actor=actor, repository="team/model", reference=reference,
                   digest=digest, result=result, time=T0 + seq)
    return AuditRecord(seq, e, "p", "h")


RECORDS = [
    rec(1, "manifest.push", "admin", "sha256:a"),
    rec(2, "manifest.pull", "alice", "sha256:a"),
    rec(3, "manifest.pull", "alice", "sha256:a", reference="sha256:a"),
    rec(4, "manifest.pull", "bob", "sha256:a"),
    rec(5, "manifest.pull", "alice", "sha256:b", reference="v2"),
    rec(6, "manifest.pull", "", "sha256:b", reference="v2"),
    rec(7, "request.denied", "eve", "", result="denied"),
]


def test_counts_per_version_and_user() -> None:
    report = build(RECORDS)
    assert len(report.rows) == 7
    a = next(v for v in report.by_version if v["digest"] == "sha256:a")
    assert (a["pulls"], a["users"], a["references"]) == (3, ["alice", "bob"], ["sha256:a", "v1"])
    assert a["first"] == "2026-03-01T12:00:02Z" and a["last"] == "2026-03-01T12:00:04Z"
    users = {u["actor"]: (u["pulls"], u["versions"]) for u in report.by_user}
    assert users == {"alice": (3, 2), "bob": (1, 1), "anonymous": (1, 1)}
    assert report.by_user[0]["actor"] == "alice"  # most pulls first


def test_formats() -> None:
    report = build(RECORDS)
    doc = json.loads(render(report, "json"))
    assert set(doc) == {"records", "pulls_by_version", "pulls_by_user"}
    blocks = render(report, "csv").strip().split("\n\n")
    assert len(blocks) == 3
    rows = list(csv.DictReader(io.StringIO(blocks[0])))
    assert rows[1]["actor"] == "alice" and rows[1]["digest"] == "sha256:a"
    versions = list(csv.DictReader(io.StringIO(blocks[1])))
    assert versions[0]["users"] == "alice bob"
    table = render(report, "table")
    assert "pulls by model version" in table and "pulls by user" in table
    with pytest.raises(ValueError):
        render(report, "xml")


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-01", parse_when("2026-03-01T00:00:00Z")),
    ("2026-03-01T12:00:00+02:00", parse_when("2026-03-01T10:00:00Z")),
    ("1772366400", 1772366400.0),
])
def test_parse_when(text: str, expected: float) -> None:
    assert parse_when(text) == expected
