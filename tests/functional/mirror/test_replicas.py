"""Replicas of one mirror on one PostgreSQL index: one upstream transfer per blob.

Three `serve` processes, each with its own data dir (its own blob files), share one
throwaway PostgreSQL index and sit in front of one center through a byte-counting proxy.
Clients on every replica ask for the same cold blob at once: the proxy must see exactly
one blob transfer, every client must get the right bytes, and clients of replicas that do
not own the transfer must get their first bytes before it is complete (streamed from the
owner, not after it). An owner killed mid-transfer must not fail anyone's pull.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from stablemirror.mirror import replica_auth
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import MiB, push_random_blob_streamed
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.s3_support import S3Cluster, blob_key
from tests.support.s3_support import s3_cluster as s3_cluster  # a fixture

SECRET = "replica-secret-for-tests-only"
BLOB_SIZE = 24 * MiB
RATE = 8 * MiB  # bytes/s through the proxy: the transfer lasts ~3 s


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres("the mirror replica tests") as server:
        yield server


@contextlib.contextmanager
def replicas(tmp_path: Path, postgres: PostgresServer, upstream: str, n: int,
             workers: int = 1, env: dict[str, str] | None = None
             ) -> Iterator[list[LiveServer]]:
    """`env`: more settings for every replica (the S3 store of a cluster)."""
    database = postgres.url(postgres.create_database())
    servers: list[LiveServer] = []
    try:
        for i in range(n):
            data = tmp_path / f"replica{i}"
            data.mkdir()
            config = tmp_path / f"replica{i}.yaml"
            server = LiveServer(data, "--config", str(config), workers=workers,
                                env={k: v for k, v in (env or {}).items()
                                     if k != "STABLEMIRROR_DATABASE_URL"})
            config.write_text(json.dumps({
                "database_url": database,
                "mirror": {
                    "upstream_groups": {"center": {"upstreams": [{"url": upstream}],
                                                   "health_check_interval": 0}},
                    "namespaces": [{"prefix": "", "mode": "proxy",
                                    "upstream_group": "center"}],
                    "replicas": {"advertise_url": server.url, "secret": SECRET,
                                 "lease_seconds": 2},
                }}))
            server.start(timeout=60)
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            server.stop()


def fetch(url: str, first_byte: list[float] | None = None) -> str:
    h = hashlib.sha256()
    with requests.get(url, stream=True, timeout=120) as r:
        assert r.status_code == 200, (r.status_code, r.text[:300])
        for chunk in r.iter_content(1 << 16):
            if first_byte is not None and not first_byte:
                first_byte.append(time.monotonic())
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def blob_transfers(proxy: FaultProxy, digest: str) -> int:
    return sum(1 for e in proxy.requests(f"/blobs/{digest}", "GET") if e.body_bytes > 0)


def replica_metric(server: LiveServer, role: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'stablemirror_replica_fetches_total{{role="{role}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_one_upstream_transfer_for_clients_on_every_replica(
        tmp_path: Path, postgres: PostgresServer,
        server_factory: Callable[..., LiveServer]) -> None:
    center = server_factory()
    digest = push_random_blob_streamed(center.url, "models/llm", BLOB_SIZE)
    with FaultProxy(center.url, "center") as proxy, \
            replicas(tmp_path, postgres, proxy.url, 3) as servers:
        for round_no in range(2):  # round 2: a second cold blob, the lease table reused
            if round_no:
                digest = push_random_blob_streamed(center.url, "models/llm", BLOB_SIZE)
            proxy.reset_counters()
            proxy.set("pass", rate=RATE)
            urls = [f"{s.url}/v2/models/llm/blobs/{digest}" for s in servers for _ in range(4)]
            with ThreadPoolExecutor(len(urls)) as pool:
                got = list(pool.map(fetch, urls))
            assert got == [digest] * len(urls)
            assert blob_transfers(proxy, digest) == 1, proxy.summary()
            assert proxy.body_bytes(f"/blobs/{digest}", "GET") <= BLOB_SIZE + MiB
        owners = sum(replica_metric(s, "owner") for s in servers)
        followers = sum(replica_metric(s, "follower") for s in servers)
        assert (owners, followers) == (2, 4), (owners, followers)


def test_a_follower_streams_before_the_owner_has_the_whole_blob(
        tmp_path: Path, postgres: PostgresServer,
        server_factory: Callable[..., LiveServer]) -> None:
    center = server_factory()
    digest = push_random_blob_streamed(center.url, "models/llm", BLOB_SIZE)
    with FaultProxy(center.url, "center") as proxy, \
            replicas(tmp_path, postgres, proxy.url, 2) as (owner, follower):
        proxy.set("pass", rate=RATE)
        first_owner: list[float] = []
        started = threading.Thread(target=fetch, args=(
            f"{owner.url}/v2/models/llm/blobs/{digest}", first_owner))
        started.start()
        deadline = time.monotonic() + 30
        while not first_owner and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first_owner, "the owner's client got nothing"
        first_follower: list[float] = []
        assert fetch(f"{follower.url}/v2/models/llm/blobs/{digest}", first_follower) == digest
        upstream_done = proxy.body_bytes(f"/blobs/{digest}", "GET")
        started.join(60)
        # the follower's first byte came while the upstream transfer still ran: it arrived
        # well before the ~3 s the owner needs for the whole blob at RATE
        assert first_follower[0] - first_owner[0] < 0.6 * BLOB_SIZE / RATE
        assert upstream_done <= BLOB_SIZE + MiB
        assert blob_transfers(proxy, digest) == 1, proxy.summary()
        assert replica_metric(follower, "follower") == 1


def test_an_owner_killed_mid_transfer_fails_nobody(
        tmp_path: Path, postgres: PostgresServer,
        server_factory: Callable[..., LiveServer]) -> None:
    center = server_factory()
    digest = push_random_blob_streamed(center.url, "models/llm", BLOB_SIZE)
    with FaultProxy(center.url, "center") as proxy, \
            replicas(tmp_path, postgres, proxy.url, 2) as (owner, follower):
        proxy.set("pass", rate=RATE)
        def owner_pull() -> None:
            with contextlib.suppress(Exception):  # its connection dies with the owner
                fetch(f"{owner.url}/v2/models/llm/blobs/{digest}")

        owner_client = threading.Thread(target=owner_pull)
        owner_client.start()
        proxy.wait_for(lambda p: p.body_bytes(f"/blobs/{digest}", "GET") > 2 * MiB)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(fetch, f"{follower.url}/v2/models/llm/blobs/{digest}")
            time.sleep(0.5)  # the follower is streaming from the owner now
            owner.kill()
            assert pending.result(timeout=120) == digest  # resumed from upstream
        owner_client.join(30)
        assert replica_metric(follower, "fallback") >= 1
        # what the follower published is the blob, nothing else
        assert fetch(f"{follower.url}/v2/models/llm/blobs/{digest}") == digest


def test_the_internal_endpoint_needs_a_valid_signature(
        tmp_path: Path, postgres: PostgresServer,
        server_factory: Callable[..., LiveServer]) -> None:
    center = server_factory()
    digest = push_random_blob_streamed(center.url, "models/small", MiB)
    with replicas(tmp_path, postgres, center.url, 1) as (server,):
        path = f"/_replica/v2/models/small/blobs/{digest}"
        now = time.time()
        refused = [
            {},
            {"Authorization": replica_auth.sign("another-secret-of-length", "GET", path, now)},
            {"Authorization": replica_auth.sign(SECRET, "GET", path + "x", now)},
            {"Authorization": replica_auth.sign(SECRET, "GET", path, now - 3600)},
        ]
        for headers in refused:
            r = requests.get(server.url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (headers, r.status_code)
            assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        signed = {"Authorization": replica_auth.sign(SECRET, "GET", path, time.time()),
                  "Range": "bytes=10-"}
        r = requests.get(server.url + path, headers=signed, timeout=30)
        assert r.status_code == 206, r.status_code
        assert len(r.content) == MiB - 10


def test_replicas_on_one_bucket_make_one_upstream_transfer_and_one_object(
        tmp_path: Path, postgres: PostgresServer, s3_cluster: S3Cluster,
        server_factory: Callable[..., LiveServer]) -> None:
    """The scale-out shape: replicas on one PostgreSQL and one S3 bucket. Concurrent cold
    pulls on every replica: one upstream transfer, one object in the bucket, and later
    pulls on any replica come from the bucket, not upstream."""
    center = server_factory()
    digest = push_random_blob_streamed(center.url, "models/llm", BLOB_SIZE)
    with FaultProxy(center.url, "center") as proxy, \
            replicas(tmp_path, postgres, proxy.url, 3, env=s3_cluster.env()) as servers:
        proxy.set("pass", rate=RATE)
        urls = [f"{s.url}/v2/models/llm/blobs/{digest}" for s in servers for _ in range(3)]
        with ThreadPoolExecutor(len(urls)) as pool:
            assert list(pool.map(fetch, urls)) == [digest] * len(urls)
        assert blob_transfers(proxy, digest) == 1, proxy.summary()
        deadline = time.monotonic() + 30  # clients finish once verified; the upload follows
        while not s3_cluster.keys("blobs/") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s3_cluster.keys("blobs/") == {blob_key(digest): BLOB_SIZE}
        proxy.reset_counters()
        for s in servers:  # warm now: from the bucket
            assert fetch(f"{s.url}/v2/models/llm/blobs/{digest}") == digest
        assert blob_transfers(proxy, digest) == 0, proxy.summary()
