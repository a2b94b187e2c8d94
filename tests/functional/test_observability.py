"""Observability against a live server: /metrics moved by real pulls, across workers;
/healthz, /readyz, /status; JSON access logs; `stablemirror status` and `gc` metrics.

Counters are checked as differences between two scrapes, so requests a test does not make
(the fixture's start-up probe, the scrapes themselves) do not matter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live import LiveServer

MiB = 1 << 20
TIMEOUT = 30
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

# Every family the issue names; each must be in a scrape of a plain hosted server.
FAMILIES = (
    "stablemirror_http_requests_total", "stablemirror_http_request_duration_seconds",
    "stablemirror_pulls_total", "stablemirror_pull_failures_total",
    "stablemirror_blob_bytes_served_total", "stablemirror_cache_requests_total",
    "stablemirror_upstream_requests_total", "stablemirror_upstream_up",
    "stablemirror_upstream_latency_seconds", "stablemirror_upstream_failovers_total",
    "stablemirror_storage_bytes", "stablemirror_storage_capacity_bytes",
    "stablemirror_uploads_in_progress", "stablemirror_gc_freed_bytes_total",
)


# -- helpers ----------------------------------------------------------------------------------
def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(url: str, repo: str, data: bytes) -> str:
    digest = digest_of(data)
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data,
                      headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return digest


def push_image(url: str, repo: str, tag: str, layer_size: int = 4096) -> dict[str, int]:
    """Push config + one layer + manifest; return {blob digest: size}."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "nonce": os.urandom(8).hex()}).encode()
    layer = os.urandom(layer_size)
    blobs = {push_blob(url, repo, config): len(config), push_blob(url, repo, layer): len(layer)}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": digest_of(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": digest_of(layer), "size": len(layer)}]}
    r = requests.put(f"{url}/v2/{repo}/manifests/{tag}", data=json.dumps(manifest).encode(),
                     headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return blobs


class Scrape:
    def __init__(self, url: str) -> None:
        r = requests.get(f"{url}/metrics", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers
        self.text = r.text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(r.text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(v for n, ls, v in self.samples
                   if n == name and all(ls.get(k) == want for k, want in labels.items()))


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def settled(url: str, ready: Callable[[Scrape], bool], timeout: float = 15.0) -> Scrape:
    """The first scrape for which `ready` holds."""
    deadline = time.monotonic() + timeout
    while True:
        scrape = Scrape(url)
        if ready(scrape) or time.monotonic() > deadline:
            return scrape
        time.sleep(0.05)


def abort_blob_get(server: LiveServer, repo: str, digest: str) -> None:
    """Start a blob GET, read a few bytes, then reset the connection mid-body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {server.host}\r\n\r\n"
                  .encode())
        assert s.recv(1024).startswith(b"HTTP/1.1 200"), "the blob GET did not start"
        time.sleep(0.2)
        # SO_LINGER 0: close with RST, as a killed client does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- pulls move the right counters ------------------------------------------------------------
def test_pulls_success_404_and_abort_move_the_counters(server: LiveServer) -> None:
    url = server.url
    blobs = push_image(url, "team/app", "v1", layer_size=64 * 1024)
    big = push_blob(url, "team/app", os.urandom(48 * MiB))  # too big for socket buffers
    before = Scrape(url)

    r = requests.get(f"{url}/v2/team/app/manifests/v1",
                     headers={"Accept": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 200
    for digest, size in blobs.items():
        r = requests.get(f"{url}/v2/team/app/blobs/{digest}", timeout=TIMEOUT)
        assert r.status_code == 200 and len(r.content) == size
    r = requests.get(f"{url}/v2/team/app/manifests/missing", timeout=TIMEOUT)
    assert r.status_code == 404
    # HEADs are not pulls.
    assert requests.head(f"{url}/v2/team/app/manifests/v1", timeout=TIMEOUT).status_code == 200
    abort_blob_get(server, "team/app", big)
    # A request is recorded just after its last byte went out: wait for the abort and the rest.
    after = settled(url, lambda s: s.value("stablemirror_pull_failures_total",
                                           reason="client_abort") >= 1
                    and delta(before, s, "stablemirror_pulls_total") >= 5)

    assert delta(before, after, "stablemirror_pulls_total", kind="manifest",
                 namespace="team") == 2
    assert delta(before, after, "stablemirror_pulls_total", kind="blob", namespace="team") == 3
    assert delta(before, after, "stablemirror_pull_failures_total", kind="manifest",
                 namespace="team", reason="not_found") == 1
    assert delta(before, after, "stablemirror_pull_failures_total", kind="blob",
                 namespace="team", reason="client_abort") == 1
    assert delta(before, after, "stablemirror_pull_failures_total") == 2
    # Completed blob GETs count their bytes; the aborted one counts none.
    assert delta(before, after, "stablemirror_blob_bytes_served_total",
                 source="local") == sum(blobs.values())
    assert delta(before, after, "stablemirror_blob_bytes_served_total", source="upstream") == 0

    duration = "stablemirror_http_request_duration_seconds"
    assert delta(before, after, f"{duration}_count", method="GET", route="manifest") == 2
    assert delta(before, after, f"{duration}_count", method="HEAD", route="manifest") == 1
    assert delta(before, after, f"{duration}_count", method="GET", route="blob") == 3
    assert delta(before, after, f"{duration}_bucket", method="GET", route="blob",
                 le="+Inf") == 3
    assert delta(before, after, f"{duration}_sum", method="GET", route="blob") > 0
    requests_total = "stablemirror_http_requests_total"
    assert delta(before, after, requests_total, route="manifest", status="200") == 2
    assert delta(before, after, requests_total, route="manifest", status="404") == 1
    assert delta(before, after, requests_total, route="blob", status="200") == 2
    assert delta(before, after, requests_total, route="blob", status="499") == 1


def test_every_family_is_exported_and_storage_is_measured(server: LiveServer) -> None:
    blobs = push_image(server.url, "library/base", "latest")
    r = requests.post(f"{server.url}/v2/library/base/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202  # an upload session left open
    scrape = Scrape(server.url)
    for family in FAMILIES:
        assert f"# TYPE {family} " in scrape.text, family
    assert scrape.value("stablemirror_storage_bytes", tier="local") == sum(blobs.values())
    capacity = scrape.value("stablemirror_storage_capacity_bytes", tier="local")
    assert capacity > sum(blobs.values())
    assert scrape.value("stablemirror_uploads_in_progress") == 1
    for result in ("hit", "miss", "coalesced", "stale"):
        assert ("stablemirror_cache_requests_total", {"result": result}, 0.0) in scrape.samples
    # No digest, tag or repository path ever becomes a label value.
    for _name, labels, _value in scrape.samples:
        for value in labels.values():
            assert not value.startswith("sha256:") and "/" not in value, labels


# -- several workers ----------------------------------------------------------------------
def test_two_workers_add_up(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory(workers=2)
    push_image(server.url, "multi/app", "v1")
    # Both workers must really serve: each /status names the worker that answered.
    pids: set[int] = set()
    for _ in range(300):  # requests.get opens a new connection each time
        pids.add(requests.get(f"{server.url}/status", timeout=TIMEOUT).json()["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"only {pids} answered"

    before = Scrape(server.url)
    n = 40
    for _ in range(n):
        r = requests.get(f"{server.url}/v2/multi/app/manifests/v1",
                         headers={"Connection": "close"}, timeout=TIMEOUT)
        assert r.status_code == 200
        r = requests.get(f"{server.url}/v2/multi/app/manifests/nope",
                         headers={"Connection": "close"}, timeout=TIMEOUT)
        assert r.status_code == 404
    # A request is recorded just after its last byte went out, so the last one may still be
    # on its way into the counters; then every worker answers with the same merged totals.
    settled(server.url, lambda s: delta(before, s, "stablemirror_http_requests_total",
                                        route="manifest") >= 2 * n)
    scrapes = [Scrape(server.url) for _ in range(6)]
    for after in scrapes:
        assert delta(before, after, "stablemirror_pulls_total", kind="manifest",
                     namespace="multi") == 2 * n
        assert delta(before, after, "stablemirror_pull_failures_total",
                     reason="not_found") == n
        assert delta(before, after, "stablemirror_http_request_duration_seconds_count",
                     method="GET", route="manifest") == 2 * n
    metrics_dir = Path((server.data_dir / "metrics-dir").read_text())
    assert not metrics_dir.is_relative_to(server.data_dir)  # never on the data filesystem
    files = {p.name for p in metrics_dir.glob("counter_*.db")}
    assert {f"counter_{pid}.db" for pid in pids} <= files, files


# -- health and readiness -------------------------------------------------------------------
@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Make `directory` refuse new files, for root too: the immutable attribute (ext4, xfs,
    btrfs), else a read-only bind mount of it. chmod would not stop root."""
    if shutil.which("chattr") and subprocess.run(
            ["chattr", "+i", str(directory)], capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        return
    if subprocess.run(["mount", "--bind", "-o", "ro", str(directory), str(directory)],
                      capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["umount", str(directory)], check=True)
        return
    pytest.skip("neither chattr +i nor a read-only bind mount works here")


def readyz(url: str) -> requests.Response:
    return requests.get(f"{url}/readyz", timeout=TIMEOUT)


def test_readiness_flips_when_the_data_dir_is_unwritable(server: LiveServer) -> None:
    r = readyz(server.url)
    assert r.status_code == 200 and r.json()["ready"] is True, r.text
    with unwritable(server.data_dir):
        r = readyz(server.url)
        assert r.status_code == 503, r.text
        assert r.json()["ready"] is False
        assert "data_dir" in r.json()["reason"]
        # (SQLite lives in the data dir too, so its check may fail as well: it cannot
        # create its journal there.)
        # Alive, though not ready.
        assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200
    assert readyz(server.url).status_code == 200


def test_readiness_flips_when_the_index_is_gone_or_corrupt(server: LiveServer) -> None:
    push_image(server.url, "library/x", "v1")
    assert readyz(server.url).status_code == 200
    db = server.data_dir / "index.db"
    saved = db.with_name("index.db.saved")
    db.rename(saved)
    r = readyz(server.url)
    assert r.status_code == 503, r.text
    assert "index" in r.json()["reason"]
    assert r.json()["checks"]["data_dir"] == "ok"
    # Scrapes still answer while the index is down.
    assert "stablemirror_pulls_total" in Scrape(server.url).text
    db.write_bytes(b"this is not a database" * 512)
    r = readyz(server.url)
    assert r.status_code == 503 and "index" in r.json()["reason"], r.text
    saved.replace(db)
    assert readyz(server.url).status_code == 200


def test_status_document(server: LiveServer) -> None:
    push_image(server.url, "library/s", "v1")
    doc = requests.get(f"{server.url}/status", timeout=TIMEOUT).json()
    assert doc["version"] and doc["role"] == "center"
    assert doc["ready"] is True and doc["uptime_seconds"] >= 0
    assert doc["upstreams"] == []
    (local,) = doc["storage"]
    assert local["tier"] == "local" and local["blobs"] == 2 and local["blob_bytes"] > 0
    assert local["capacity_bytes"] > local["blob_bytes"]


# -- logs ----------------------------------------------------------------------------------------
def test_json_access_log_line_per_request(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory("--log-format", "json")
    r = requests.get(f"{server.url}/v2/library/nothing/manifests/latest",
                     headers={"X-Request-ID": "req-test-1234"}, timeout=TIMEOUT)
    assert r.status_code == 404 and r.headers["X-Request-ID"] == "req-test-1234"
    generated = requests.get(f"{server.url}/v2/", timeout=TIMEOUT).headers["X-Request-ID"]
    assert len(generated) >= 16

    def lines() -> list[dict[str, object]]:
        found = []
        for line in server.log().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and doc.get("logger") == "stablemirror.access":
                    found.append(doc)
        return found

    # the access line is written after the response is sent: wait for both requests' lines
    wait_for(lambda: {"req-test-1234", generated} <= {d["request_id"] for d in lines()},
             "the log lines")
    (line,) = [d for d in lines() if d["request_id"] == "req-test-1234"]
    assert line["method"] == "GET" and line["route"] == "manifest"
    assert line["repository"] == "library/nothing" and line["reference"] == "latest"
    assert line["status"] == 404 and line["client"] == "127.0.0.1"
    assert isinstance(line["bytes"], int) and line["bytes"] > 0
    assert isinstance(line["duration_ms"], float)
    assert "user" in line and "ts" in line and line["level"] == "info"
    assert [d["request_id"] for d in lines()].count(generated) == 1


# -- command line ---------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stablemirror", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})


def test_status_command(server: LiveServer) -> None:
    push_image(server.url, "library/cli", "v1")
    requests.get(f"{server.url}/v2/library/cli/manifests/v1", timeout=TIMEOUT)
    requests.get(f"{server.url}/v2/library/cli/manifests/gone", timeout=TIMEOUT)
    done = run_cli("status", "--url", server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for expected in ("stablemirror", "ready", "Pulls", "manifest", "not_found 1", "Storage",
                     "local"):
        assert expected in out, out


def test_status_command_exit_codes(server: LiveServer, tmp_path: Path) -> None:
    with unwritable(server.data_dir):
        done = run_cli("status", "--url", server.url)
    assert done.returncode == 2 and "NOT READY" in done.stdout, done.stdout
    server.stop()
    done = run_cli("status", "--url", server.url)
    assert done.returncode == 1 and "cannot read" in done.stdout


def test_gc_freed_bytes_reach_the_running_server(server: LiveServer) -> None:
    orphan = os.urandom(100_000)
    push_blob(server.url, "library/gc", orphan)  # no manifest references it
    before = Scrape(server.url).value("stablemirror_gc_freed_bytes_total")
    done = run_cli("gc", "--data-dir", str(server.data_dir), "--grace", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    after = Scrape(server.url).value("stablemirror_gc_freed_bytes_total")
    assert after - before == len(orphan)
