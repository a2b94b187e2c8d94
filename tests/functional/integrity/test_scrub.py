"""Integrity of stored bytes on a live server: scrub, quarantine, verify_on_read.

Whatever the mode, a client never gets a clean, complete response with wrong bytes once
the corruption is known, and a hashed read (`first` before its first verification,
`always` every time) drops the connection instead of ending a wrong body cleanly.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support.live import LiveServer
from tests.support.trust_support import (
    Image,
    blob_path,
    cli,
    error,
    flip_byte,
    metric,
    push_image,
    sha256,
)

MODES = ("never", "first", "always")


def mode_env(mode: str) -> dict[str, str]:
    return {"STABLEMIRROR_INTEGRITY__VERIFY_ON_READ": mode}


def raw_get(server: LiveServer, path: str, extra: str = "") -> tuple[int, dict[str, str],
                                                                      bytes, bool]:
    """(status, headers, body, complete) over a raw socket: `complete` is False when the
    connection closed before Content-Length bytes arrived."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\n{extra}"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    complete = len(body) == int(headers.get("content-length", len(body)))
    return status, headers, body, complete


def count(report: str, row: str) -> int:
    """A number from the table `stablemirror scrub` prints."""
    m = re.search(rf"{re.escape(row)}\s*\S\s*([\d,]+)", report)
    assert m is not None, report
    return int(m.group(1).replace(",", ""))


def blob_url(server: LiveServer, image: Image, digest: str) -> str:
    return f"/v2/{image.repository}/blobs/{digest}"


def assert_never_served_wrong(server: LiveServer, image: Image, digest: str) -> None:
    status, headers, body, complete = raw_get(server, blob_url(server, image, digest))
    if status == 200 and complete:
        assert sha256(body) == digest, "a complete 200 carried wrong bytes"
    else:
        assert status == 404 or not complete, (status, headers)


@pytest.mark.parametrize("mode", MODES)
def test_scrub_quarantines_a_flipped_byte(server_factory: Callable[..., LiveServer],
                                          mode: str) -> None:
    server = server_factory(env=mode_env(mode))
    image = push_image(server.url, "models/bert", layer_size=3 * 1024 * 1024 + 11)
    layer = image.layer
    # Served (and, in `first`, verified) once while intact.
    status, _h, body, complete = raw_get(server, blob_url(server, image, layer))
    assert status == 200 and complete and sha256(body) == layer
    flip_byte(server.data_dir, layer)
    if mode == "always":  # a hashed read notices: short body, then the blob is gone
        status, _h, body, complete = raw_get(server, blob_url(server, image, layer))
        assert status == 200 and not complete and len(body) < len(image.blobs[layer])
        assert not blob_path(server.data_dir, layer).exists()
    out = cli("scrub", "--data-dir", str(server.data_dir)).stdout
    if mode != "always":  # (in `always` the read above quarantined it already)
        assert f"CORRUPT {layer}: quarantined" in out, out
        assert count(out, "corrupt (quarantined)") == 1
    assert not blob_path(server.data_dir, layer).exists()
    assert list((server.data_dir / "quarantine").iterdir())
    for _ in range(3):  # never again, whatever the mode
        status, _h, body, _c = raw_get(server, blob_url(server, image, layer))
        assert status == 404, (status, body[:200])
    r = requests.get(f"{server.url}{blob_url(server, image, layer)}", timeout=30)
    assert error(r)["code"] == "BLOB_UNKNOWN" and "quarantined" in str(error(r)["message"])
    head = requests.head(f"{server.url}{blob_url(server, image, layer)}", timeout=30)
    assert head.status_code == 404
    # Other blobs of the image are untouched and still served.
    config = next(iter(image.blobs))
    assert requests.get(f"{server.url}{blob_url(server, image, config)}",
                        timeout=30).content == image.blobs[config]
    # A verified push of the same bytes makes the blob whole again.
    r = requests.post(f"{server.url}/v2/models/bert/blobs/uploads/?digest={layer}",
                      data=image.blobs[layer], timeout=30)
    assert r.status_code == 201
    r = requests.get(f"{server.url}{blob_url(server, image, layer)}", timeout=30)
    assert r.status_code == 200 and sha256(r.content) == layer
    again = cli("scrub", "--data-dir", str(server.data_dir)).stdout
    assert "CORRUPT" not in again


@pytest.mark.parametrize("mode", ("first", "always"))
def test_hashed_reads_abort_before_scrub(server_factory: Callable[..., LiveServer],
                                         mode: str) -> None:
    """A blob not yet verified in this process is hashed while served; a mismatch drops
    the connection (also for a Range request) and quarantines the blob at once."""
    server = server_factory(env=mode_env(mode))
    image = push_image(server.url, "models/t5", layer_size=2 * 1024 * 1024 + 5, layers=2)
    first_layer, second_layer = list(image.blobs)[1:]
    flip_byte(server.data_dir, first_layer, offset=7)
    status, _h, body, complete = raw_get(server, blob_url(server, image, first_layer))
    assert status == 200 and not complete
    assert len(body) < len(image.blobs[first_layer])
    assert_never_served_wrong(server, image, first_layer)
    assert not blob_path(server.data_dir, first_layer).exists()
    # Range: the range is intact, but the blob is not: aborted as well.
    flip_byte(server.data_dir, second_layer, offset=2 * 1024 * 1024)
    status, _h, body, complete = raw_get(server, blob_url(server, image, second_layer),
                                         "Range: bytes=0-99\r\n")
    assert status == 206 and not complete
    assert "found by read" in server.log()
    assert metric(server.url, "stablemirror_blobs_quarantined_total", found_by="read") == 2


def test_first_verifies_once_then_again_after_restart_or_stale(
        server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory(env=mode_env("first"))
    image = push_image(server.url, "models/gpt", layer_size=1024 * 1024)
    good = push_image(server.url, "models/gpt", "v2", layer_size=1024 * 1024)
    layer = image.layer
    assert raw_get(server, blob_url(server, image, layer))[3]
    assert raw_get(server, blob_url(server, good, good.layer))[3]
    flip_byte(server.data_dir, layer)
    # Verified earlier in this process: `first` trusts it (sendfile) until stale.
    status, _h, _b, complete = raw_get(server, blob_url(server, image, layer))
    assert status == 200 and complete
    server.restart()  # a new process verifies again on first read
    status, _h, _b, complete = raw_get(server, blob_url(server, image, layer))
    assert status == 200 and not complete
    assert not blob_path(server.data_dir, layer).exists()
    # That corruption marked every earlier verification stale: `good` is re-hashed (and
    # is fine).
    status, _h, body, complete = raw_get(server, blob_url(server, good, good.layer))
    assert status == 200 and complete and sha256(body) == good.layer


def test_background_scrub_worker(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory(env={
        "STABLEMIRROR_INTEGRITY__SCRUB__INTERVAL_SECONDS": "0.5",
        "STABLEMIRROR_INTEGRITY__SCRUB__REVERIFY_AFTER_SECONDS": "0",
        "STABLEMIRROR_INTEGRITY__SCRUB__RATE_BYTES_PER_SECOND": "20000000"}, workers=2)
    image = push_image(server.url, "models/whisper", layer_size=512 * 1024)
    flip_byte(server.data_dir, image.layer)
    deadline = time.monotonic() + 20
    while blob_path(server.data_dir, image.layer).exists():
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.2)
    assert requests.get(f"{server.url}{blob_url(server, image, image.layer)}",
                        timeout=30).status_code == 404
    assert metric(server.url, "stablemirror_scrub_blobs_total", result="corrupt") == 1
    assert metric(server.url, "stablemirror_scrub_blobs_total", result="ok") >= 1
    assert "found by scrub" in server.log()


def test_scrub_rate_limit_and_skip_recent(server: LiveServer, tmp_path: Path) -> None:
    push_image(server.url, "models/big", layer_size=4 * 1000 * 1000)
    started = time.monotonic()
    out = cli("scrub", "--data-dir", str(server.data_dir), "--rate", "2").stdout
    assert time.monotonic() - started >= 1.0  # 4 MB at 2 MB/s, one second of burst
    assert "CORRUPT" not in out
    assert count(out, "blobs verified") == 2 and count(out, "ok") == 2
    recent = cli("scrub", "--data-dir", str(server.data_dir), "--older-than", "3600").stdout
    assert count(recent, "skipped (verified recently)") == 2, recent
    assert count(recent, "blobs verified") == 0
