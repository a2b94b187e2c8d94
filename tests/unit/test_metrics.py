"""The Metrics API: bounded labels, every family exported, and multiprocess merging.

Multiprocess mode changes prometheus_client's process-wide value class, so it is exercised
in child processes, never in the test process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stablemirror.api.telemetry import failure_reason
from stablemirror.metrics import INVALID, OTHER, Metrics

ISSUE_FAMILIES = {
    "stablemirror_http_requests_total", "stablemirror_http_request_duration_seconds_bucket",
    "stablemirror_pulls_total", "stablemirror_pull_failures_total",
    "stablemirror_blob_bytes_served_total", "stablemirror_cache_requests_total",
    "stablemirror_upstream_requests_total", "stablemirror_upstream_up",
    "stablemirror_upstream_latency_seconds_bucket", "stablemirror_upstream_failovers_total",
    "stablemirror_storage_bytes", "stablemirror_storage_capacity_bytes",
    "stablemirror_uploads_in_progress", "stablemirror_gc_freed_bytes_total",
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_family_is_declared_and_exported_before_use() -> None:
    m = Metrics()
    assert m.sample_names() >= ISSUE_FAMILIES
    assert all(name.startswith("stablemirror_") for name in m.sample_names())
    text = m.render().decode()
    for name in ISSUE_FAMILIES:
        family = name.removesuffix("_bucket").removesuffix("_total")
        assert f"# HELP {family}" in text, family
    assert "_created" not in text  # multiprocess mode has none; neither do we


def test_recording_api() -> None:
    m = Metrics()
    m.pull("manifest", "library/ubuntu")
    m.pull_failure("blob", "models/llama/weights", "upstream")
    m.blob_bytes_served("upstream", 1000)
    m.blob_bytes_served("local", 0)
    m.cache("coalesced")
    m.upstream_request("hub-a", "timeout", 2.0)
    m.set_upstream_up("hub-a", False)
    m.failover()
    m.set_storage("local", 10, 100)
    m.gc_freed_bytes(5)
    m.http_request("BREW", "unmatched", 501, 0.1)
    got = samples(m.render().decode())

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    assert value("stablemirror_pulls_total", kind="manifest", namespace="library") == 1
    assert value("stablemirror_pull_failures_total", kind="blob", namespace="models",
                 reason="upstream") == 1
    assert value("stablemirror_blob_bytes_served_total", source="upstream") == 1000
    assert value("stablemirror_blob_bytes_served_total", source="local") == 0
    assert value("stablemirror_cache_requests_total", result="coalesced") == 1
    assert value("stablemirror_upstream_requests_total", upstream="hub-a",
                 result="timeout") == 1
    assert value("stablemirror_upstream_latency_seconds_count", upstream="hub-a") == 1
    assert value("stablemirror_upstream_up", upstream="hub-a") == 0
    assert value("stablemirror_upstream_failovers_total") == 1
    assert value("stablemirror_storage_capacity_bytes", tier="local") == 100
    assert value("stablemirror_gc_freed_bytes_total") == 5
    assert value("stablemirror_http_requests_total", method="other", route="unmatched",
                 status="501") == 1
    (health,) = m.upstream_health()
    assert health.upstream == "hub-a" and health.up is False
    assert health.requests == {"timeout": 1} and health.mean_latency_seconds == 2.0


@pytest.mark.parametrize("call", [
    lambda m: m.pull("tag", "a"),
    lambda m: m.pull_failure("blob", "a", "teapot"),
    lambda m: m.blob_bytes_served("s3", 1),
    lambda m: m.cache("warm"),
    lambda m: m.upstream_request("hub", "maybe"),
])
def test_unbounded_label_values_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call(Metrics())  # type: ignore[operator]


def test_configured_names_are_tidied_never_refused() -> None:
    m = Metrics()
    m.set_upstream_up("user:secret@registry.example:443", True)
    m.set_storage("", 1, 2)
    text = m.render().decode()
    assert 'upstream="registry.example:443"' in text and "secret" not in text
    assert 'tier="_unnamed"' in text


def test_namespace_label_is_bounded() -> None:
    m = Metrics(max_namespaces=2)
    assert m.namespace("library/ubuntu") == "library"
    assert m.namespace("models") == "models"
    assert m.namespace("third/x") == OTHER
    assert m.namespace("library/other") == "library"  # admitted ones stay
    assert m.namespace("../etc") == INVALID
    assert m.namespace("UPPER/x") == INVALID


@pytest.mark.parametrize(("status", "reason"), [
    (200, None), (206, None), (304, None), (404, "not_found"), (401, "denied"),
    (403, "denied"), (502, "upstream"), (503, "upstream"), (504, "upstream"),
    (400, "invalid"), (416, "invalid"), (500, "error"), (507, "error"),
])
def test_failure_reason_by_status(status: int, reason: str | None) -> None:
    assert failure_reason(status) == reason


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from stablemirror.metrics import Metrics, prepare_multiprocess_dir
    d = prepare_multiprocess_dir(Path(sys.argv[1]), clean=False)
    m = Metrics(multiprocess_dir=d)
    m.pull("blob", "library/x")
    m.blob_bytes_served("local", int(sys.argv[2]))
    m.http_request("GET", "blob", 200, 0.5)
    m.set_upstream_up("hub", sys.argv[3] == "up")
    m.set_storage("local", int(sys.argv[2]), 10**9)
    print(m.render().decode())
""")


def test_multiprocess_values_merge_across_processes(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    run("100", "up")
    last = samples(run("250", "down"))
    assert last[("stablemirror_pulls_total",
                 frozenset({("kind", "blob"), ("namespace", "library")}))] == 2
    assert last[("stablemirror_blob_bytes_served_total",
                 frozenset({("source", "local")}))] == 350
    assert last[("stablemirror_http_request_duration_seconds_count",
                 frozenset({("method", "GET"), ("route", "blob")}))] == 2
    # min over processes: down as soon as one saw it down
    assert last[("stablemirror_upstream_up", frozenset({("upstream", "hub")}))] == 0
    # the most recent value wins, not the sum
    assert last[("stablemirror_storage_bytes", frozenset({("tier", "local")}))] == 250
    assert "_created" not in "".join(name for name, _ in last)
