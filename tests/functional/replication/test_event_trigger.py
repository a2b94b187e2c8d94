"""An event-triggered push rule between two real stablemirror processes: the source's
registry events (published by registry/publishing.py) reach its replication trigger through
the same fan-out as the notification endpoints, and each becomes a durable job that copies
the change to the destination: a push (with its cosign `.sig` tag), a moved tag, a delete."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.live import LiveServer
from tests.support.mirror_support import make_image, push_image, running_server
from tests.support.replication_support import assert_image_at, manifest_bytes, push_sig_tag

TIMEOUT = 30.0


def wait_for(check: Callable[[], bool], what: str) -> float:
    """Seconds until `check()` holds (bounded by TIMEOUT)."""
    start = time.monotonic()
    while time.monotonic() - start < TIMEOUT:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    root: Path = tmp_path_factory.mktemp("event-regions")
    with running_server(root / "region2") as destination:
        config = root / "region1.yaml"
        config.write_text(json.dumps({
            "jobs": {"poll_seconds": 0.2, "backoff_seconds": 0.5},
            "replication": {"rules": [{
                "name": "to-region2", "mode": "push", "destination": destination.url,
                "filters": {"repositories": ["ev/*"]}, "trigger": {"event": True},
                "delete": "propagate"}]}}))
        with running_server(root / "region1", "--config", str(config),
                            workers=2) as source:
            yield source, destination


def test_push_move_and_delete_follow_by_event(regions: tuple[LiveServer, LiveServer]) -> None:
    source, destination = regions
    image = push_image(source.url, make_image("ev/app", "v1", (300_000, 20_000)))
    signature, _ = push_sig_tag(source.url, "ev/app", image.digest)
    sig_tag = f"sha256-{image.digest.split(':')[1]}.sig"
    wait_for(lambda: manifest_bytes(destination.url, "ev/app", "v1") == image.manifest,
             "the pushed image at the destination")
    assert_image_at(destination.url, "ev/app", "v1", image)
    wait_for(lambda: manifest_bytes(destination.url, "ev/app", sig_tag) == signature,
             "its signature tag at the destination")

    # Outside the rule's filter: never copied (checked after a later event has been copied).
    push_image(source.url, make_image("other/app", "v1", (1_000,)))
    moved = push_image(source.url, make_image("ev/app", "v1", (10_000,)))
    wait_for(lambda: manifest_bytes(destination.url, "ev/app", "v1") == moved.manifest,
             "the moved tag at the destination")
    assert manifest_bytes(destination.url, "other/app", "v1") is None

    r = requests.delete(f"{source.url}/v2/ev/app/manifests/{image.digest}", timeout=10)
    assert r.status_code == 202, r.text
    wait_for(lambda: manifest_bytes(destination.url, "ev/app", image.digest) is None,
             "the delete at the destination")
    assert manifest_bytes(destination.url, "ev/app", "v1") == moved.manifest

    status = requests.get(f"{source.url}/api/v1/replication/status", timeout=10)
    assert status.status_code == 200, status.text
    rows = {row["rule"]: row for row in status.json()["rules"]}
    wait_for(lambda: {row["rule"]: row for row in requests.get(
        f"{source.url}/api/v1/replication/status", timeout=10).json()["rules"]
    }["to-region2"]["lag_seconds"] == 0.0, "the rule's lag back to 0")
    assert rows["to-region2"]["artifacts_copied"] >= 2, rows
