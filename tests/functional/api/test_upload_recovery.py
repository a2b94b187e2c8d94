"""A chunked upload survives a server killed in the middle of a PATCH, as the README
promises: the interrupted chunk is dropped and the session resumes at the last
acknowledged offset, so the client resends exactly the chunk it got no answer for."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.support.live import LiveServer
from tests.support.oci_http import Api, MiB, digest_of, random_bytes, send_partial


def _staged_size(data_dir: Path, location: str) -> int:
    upload_id = location.rstrip("/").rsplit("/", 1)[1]
    try:
        return (data_dir / "uploads" / upload_id / "data").stat().st_size
    except FileNotFoundError:
        return -1


def test_kill_during_patch_resumes_at_the_acknowledged_offset(
        server_factory: Callable[..., LiveServer]) -> None:
    srv = server_factory()
    api = Api(srv)
    first, second = random_bytes(MiB), random_bytes(2 * MiB)
    location = api.start_upload("crash/chunked")
    assert api.patch(location, first, start=0).status_code == 202

    # Half of the second chunk reaches the staged file, then the server dies.
    conn = send_partial(srv, "PATCH", location, declared=len(second), sent=second[:MiB])
    deadline = time.monotonic() + 10
    while _staged_size(srv.data_dir, location) <= len(first) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _staged_size(srv.data_dir, location) > len(first), "the partial chunk was not staged"
    srv.kill()
    conn.close()
    srv.start()

    status = api.get(location)
    assert status.status_code == 204, status.text
    assert status.headers["Range"] == f"0-{len(first) - 1}"
    r = api.patch(location, second, start=len(first))
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(first) + len(second) - 1}"
    whole = first + second
    r = api.finish(location, digest_of(whole))
    assert r.status_code == 201, r.text
    assert api.blob("crash/chunked", digest_of(whole)).content == whole


def test_kill_during_patch_then_finish_without_resending(
        server_factory: Callable[..., LiveServer]) -> None:
    """A PUT with no body right after the restart commits the acknowledged bytes only."""
    srv = server_factory()
    api = Api(srv)
    first = random_bytes(MiB)
    location = api.start_upload("crash/finish")
    assert api.patch(location, first, start=0).status_code == 202
    conn = send_partial(srv, "PATCH", location, declared=2 * MiB, sent=random_bytes(MiB))
    deadline = time.monotonic() + 10
    while _staged_size(srv.data_dir, location) <= len(first) and time.monotonic() < deadline:
        time.sleep(0.02)
    srv.kill()
    conn.close()
    srv.start()
    r = api.finish(location, digest_of(first))
    assert r.status_code == 201, r.text
    assert api.blob("crash/finish", digest_of(first)).content == first
