"""Two replicas on one PostgreSQL index with one endpoint: pushes to either are delivered
once each, in the order they were made (one outbox, one sender at a time by lease)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.live import LiveServer
from tests.support.mirror_support import make_image, push_image
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "replica-secret-0123456789"
WAIT = 30.0


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with running_postgres("the notification replica tests") as server:
        yield server


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(tmp_path / "receiver", SECRET)
    r.start()
    yield r
    r.kill()


@pytest.fixture
def replicas(pg: PostgresServer, receiver: WebhookReceiver, tmp_path: Path
             ) -> Iterator[list[LiveServer]]:
    url = pg.url(pg.create_database())
    cfg = tmp_path / "notify.yml"
    cfg.write_text(json.dumps({"notifications": {
        "poll_seconds": 0.2, "lease_seconds": 3, "endpoints": [{
            "name": "hooks", "url": receiver.events_url, "secret": SECRET,
            "timeout_seconds": 2, "backoff_seconds": 0.2, "backoff_max_seconds": 1.0}]}}))
    data = tmp_path / "shared"  # the blob store both replicas share
    data.mkdir()
    servers = [LiveServer(data, "--config", str(cfg), env={
        "STABLEMIRROR_DATABASE_URL": url, "STABLEMIRROR_REPLICA_ID": name})
        for name in ("east", "west")]
    with ThreadPoolExecutor(2) as starting:  # together: they migrate one at a time
        for started in [starting.submit(s.start, 60) for s in servers]:
            started.result()
    yield servers
    for s in servers:
        s.stop()


def test_pushes_to_either_replica_arrive_once_in_order(
        replicas: list[LiveServer], receiver: WebhookReceiver) -> None:
    tags = [f"t{n:02d}" for n in range(10)]
    for n, tag in enumerate(tags):
        push_image(replicas[n % 2].url, make_image("shared/app", tag, layer_sizes=(1024,)))
    deadline = time.monotonic() + WAIT
    while len(receiver.events()) < len(tags) and time.monotonic() < deadline:
        time.sleep(0.1)
    events = receiver.events()
    assert [e["target"]["tag"] for e in events] == tags, (events, replicas[0].log()[-2000:])
    assert len({e["id"] for e in events}) == len(tags)
    assert {e["source"]["instanceID"] for e in events} == {"east", "west"}
    time.sleep(1.0)  # nothing else is coming: a duplicate would have arrived by now
    assert len(receiver.events()) == len(tags)
