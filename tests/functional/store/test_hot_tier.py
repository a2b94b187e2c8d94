"""The hot tier against the real server (2 workers, filesystem store as the cold tier,
`storage.hot.*` from the environment): a blob read often enough is promoted, then served by
sendfile(2) from the hot dir with no cold read (strace shows it; the cold copy is moved away
meanwhile); concurrent GETs of a cold blob across the workers cost exactly one cold read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.functional.test_startup_errors import one_error_line, stablemirror
from tests.support.live import LiveServer, free_port
from tests.support.oci_http import Api, wait_until
from tests.support.trust_support import metric

MiB = 1 << 20
TIMEOUT = 60


def hot_server(tmp_path: Path, promote_after: int) -> LiveServer:
    hot = tmp_path / "hot"
    return LiveServer(tmp_path / "data", workers=2, env={
        "STABLEMIRROR_STORAGE__HOT__PATH": str(hot),
        "STABLEMIRROR_STORAGE__HOT__PROMOTE_AFTER": str(promote_after),
        "STABLEMIRROR_STORAGE__HOT__WINDOW": "600",
    })


@contextlib.contextmanager
def running(server: LiveServer) -> Iterator[LiveServer]:
    server.data_dir.mkdir(parents=True, exist_ok=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def hot_copy(tmp_path: Path, digest: str) -> Path:
    alg, hex_ = digest.split(":")
    return tmp_path / "hot" / "blobs" / alg / hex_[:2] / hex_


def cold_copy(tmp_path: Path, digest: str) -> Path:
    alg, hex_ = digest.split(":")
    return tmp_path / "data" / "blobs" / alg / hex_[:2] / hex_


def get_blob(server: LiveServer, repo: str, digest: str) -> str:
    r = requests.get(f"{server.url}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return "sha256:" + hashlib.sha256(r.content).hexdigest()


def worker_pids(server: LiveServer) -> list[int]:
    assert server.proc is not None
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 2, children
    return [int(c) for c in children]


@contextlib.contextmanager
def traced(pids: list[int], out: Path) -> Iterator[None]:
    """strace the workers' (and their threads') openat and sendfile calls into `out`."""
    strace = shutil.which("strace")
    assert strace, "strace is needed to see sendfile(2) (apt-get install strace)"
    args = [a for p in pids for a in ("-p", str(p))]
    proc = subprocess.Popen([strace, "-f", "-qq", "-e", "trace=openat,sendfile", "-o",
                             str(out), *args], stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # attached by then (strace gives no other sign with -qq)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield
        time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_blob_read_often_is_promoted_then_sent_from_the_hot_dir_with_no_cold_read(
        tmp_path: Path) -> None:
    with running(hot_server(tmp_path, promote_after=3)) as server:
        api = Api(server)
        data = os.urandom(8 * MiB + 5)
        digest = api.push_blob("hot/model", data)
        for _ in range(2):
            assert get_blob(server, "hot/model", digest) == digest
        assert not hot_copy(tmp_path, digest).exists()  # 2 of 3 hits: still cold
        assert get_blob(server, "hot/model", digest) == digest  # the 3rd promotes it
        wait_until(lambda: hot_copy(tmp_path, digest).exists(), what="promotion")
        assert hot_copy(tmp_path, digest).read_bytes() == data
        assert metric(server.url, "stablemirror_tier_promotions_total") == 1
        cold_before = metric(server.url, "stablemirror_tier_hits_total", tier="cold")
        hot_before = metric(server.url, "stablemirror_tier_hits_total", tier="hot")

        moved = tmp_path / "moved-away"
        os.rename(cold_copy(tmp_path, digest), moved)  # any cold read would now fail
        trace = tmp_path / "strace.out"
        with traced(worker_pids(server), trace):
            for _ in range(6):
                assert get_blob(server, "hot/model", digest) == digest
        os.rename(moved, cold_copy(tmp_path, digest))

        assert metric(server.url, "stablemirror_tier_hits_total", tier="cold") == cold_before
        assert metric(server.url, "stablemirror_tier_hits_total", tier="hot") >= hot_before + 6
        assert metric(server.url, "stablemirror_storage_bytes", tier="hot") == len(data)
        lines = trace.read_text().splitlines()
        hot_opens = [ln for ln in lines if "openat(" in ln and str(hot_copy(tmp_path, digest))
                     in ln and "= -1" not in ln]
        cold_opens = [ln for ln in lines if "openat(" in ln and digest.split(":")[1] in ln
                      and str(tmp_path / "data") in ln]
        sendfiles = [ln for ln in lines if "sendfile(" in ln]
        assert len(hot_opens) >= 6, lines[-40:]
        assert cold_opens == []
        assert sum(int(ln.rsplit("=", 1)[1].split()[0]) for ln in sendfiles
                   if ln.rsplit("=", 1)[1].strip().split()[0].isdigit()) >= 6 * len(data)


def test_concurrent_gets_of_a_cold_blob_across_two_workers_cost_one_cold_read(
        tmp_path: Path) -> None:
    rounds, clients = 4, 24
    with running(hot_server(tmp_path, promote_after=1)) as server:
        api = Api(server)
        for n in range(rounds):
            data = os.urandom(48 * MiB + n)
            digest = api.push_blob("hot/race", data)
            cold_reads = metric(server.url, "stablemirror_tier_hits_total", tier="cold")
            cold_bytes = metric(server.url, "stablemirror_tier_bytes_total", tier="cold")
            with ThreadPoolExecutor(clients) as pool:
                got = list(pool.map(get_blob, [server] * clients, ["hot/race"] * clients,
                                    [digest] * clients, timeout=120))
            assert got == [digest] * clients
            hot = hot_copy(tmp_path, digest)
            wait_until(hot.exists, what="promotion")
            assert metric(server.url, "stablemirror_tier_hits_total",
                          tier="cold") == cold_reads + 1, f"round {n}"
            assert metric(server.url, "stablemirror_tier_bytes_total",
                          tier="cold") == cold_bytes + len(data), f"round {n}"
        assert metric(server.url, "stablemirror_tier_promotions_total") == rounds
        assert list((tmp_path / "hot" / "promoting").glob("*.part")) == []


def test_a_hot_path_that_is_no_directory_stops_the_start_in_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "hot-file"
    not_a_dir.write_text("")
    r = stablemirror("serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                     str(tmp_path / "data"),
                     env={"STABLEMIRROR_STORAGE__HOT__PATH": str(not_a_dir)})
    line = one_error_line(r, f"storage.hot.path '{not_a_dir}'", code=1)
    assert line.endswith("not a directory")
    r = stablemirror("serve", "--data-dir", str(tmp_path / "data"),
                     env={"STABLEMIRROR_STORAGE__HOT__HIGH_WATERMARK": "1.5"})
    one_error_line(r, "STABLEMIRROR_STORAGE__HOT__HIGH_WATERMARK '1.5'", code=2)


def test_gc_takes_the_hot_copy_with_the_blob(tmp_path: Path) -> None:
    with running(hot_server(tmp_path, promote_after=1)) as server:
        api = Api(server)
        lone = os.urandom(300_000)
        digest = api.push_blob("hot/gc", lone)
        assert get_blob(server, "hot/gc", digest) == digest
        wait_until(lambda: hot_copy(tmp_path, digest).exists(), what="promotion")
        assert get_blob(server, "hot/gc", digest) == digest  # held by a worker now
        assert api.request("DELETE", f"/v2/hot/gc/blobs/{digest}").status_code == 202
        time.sleep(0.05)
        r = subprocess.run([sys.executable, "-m", "stablemirror", "gc", "--data-dir",
                            str(server.data_dir), "--grace", "0"], capture_output=True,
                           text=True, timeout=120, check=False,
                           env={**os.environ, **server.env})
        assert r.returncode == 0, r.stdout + r.stderr
        assert not hot_copy(tmp_path, digest).exists()
        assert not cold_copy(tmp_path, digest).exists()
        assert api.blob("hot/gc", digest).status_code == 404
        assert api.push_blob("hot/gc", lone) == digest  # and it can come back
        assert get_blob(server, "hot/gc", digest) == digest
