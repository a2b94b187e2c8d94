"""Two regions in network namespaces joined through a bridge by veth links, each region's
uplink shaped to 100 Mbit with `tc tbf` (this kernel has no netem: no added delay): region 1
pushes by an event-triggered rule into region 2. What crosses region 1's uplink is counted
on its veth: each byte of the image crosses the link once, and a tag that did not change
moves nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mirror_support import MiB, make_image, push_image
from tests.support.netns import Bridge, NetnsServer
from tests.support.oci_http import wait_until
from tests.support.replication_support import assert_image_at, manifest_bytes

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Bridge, NetnsServer, NetnsServer]]:
    root: Path = tmp_path_factory.mktemp("regions")
    bridge = Bridge()
    servers: list[NetnsServer] = []
    try:
        ns1, addr1 = bridge.host(1)
        ns2, addr2 = bridge.host(2)
        for ns in (ns1, ns2):
            bridge.shape(ns, "100mbit")
        region2 = NetnsServer(ns2, addr2, root / "region2")
        servers.append(region2)
        region2.start()
        config = root / "region1.yaml"
        config.write_text(json.dumps({
            "jobs": {"poll_seconds": 0.2, "backoff_seconds": 0.5},
            "replication": {"rules": [{
                "name": "to-region2", "mode": "push", "destination": region2.url,
                "filters": {"repositories": ["models/*"]}, "trigger": {"event": True},
                "delete": "propagate", "parallel_streams": 2, "chunk_size_mib": 2}]}}))
        region1 = NetnsServer(ns1, addr1, root / "region1", "--config", str(config))
        servers.append(region1)
        region1.start()
        yield bridge, region1, region2
    finally:
        for s in servers:
            s.stop()
        bridge.close()


def test_an_image_crosses_the_shaped_link_once(
        regions: tuple[Bridge, NetnsServer, NetnsServer]) -> None:
    bridge, region1, region2 = regions
    image = make_image("models/llm", "v1", (6 * MiB + 3, 300_000))
    size = sum(len(b) for b in image.blobs.values()) + len(image.manifest)
    received_before = bridge.sent_by(1)  # region 1's uplink: what it sent over the bridge
    push_image(region1.url, image)
    pushed = bridge.sent_by(1) - received_before  # the test's push: answers only, small
    wait_until(lambda: manifest_bytes(region2.url, "models/llm", "v1") == image.manifest,
               TIMEOUT, "the image in region 2")
    assert_image_at(region2.url, "models/llm", "v1", image)
    time.sleep(0.5)  # let the last answers of the copy land on the counter
    crossed = bridge.sent_by(1) - received_before - pushed
    # Headers, TCP/IP framing and the few small requests cost a few percent; a second copy
    # of any blob would show as +100% of it.
    assert size <= crossed <= size * 1.1 + 200_000, (crossed, size)
    print(f"image {size} bytes, region 1 uplink carried {crossed} ({crossed / size:.3f}x)")

    # The same tag pushed again: the copy's HEAD sees it unchanged and moves no blob.
    before = bridge.sent_by(1)
    push_image(region1.url, image)
    time.sleep(2.0)  # the event's job runs within a poll (0.2 s) and a HEAD
    again = bridge.sent_by(1) - before
    assert again < 0.2 * size, (again, size)
