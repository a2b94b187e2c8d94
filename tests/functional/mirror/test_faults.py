"""Faults between the mirror and its upstreams, injected by tests/faultproxy.py.

Every test checks the bytes a client received against the pushed content, and counts at
the proxy what the mirror asked upstream for: resumes are Range requests after the bytes
already received, not restarts; failover moves requests to the backup without a
client-visible error; corrupt bytes are never stored and never end a response cleanly.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.clients import ReferenceRegistry
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    MiB,
    Registry,
    assert_blob,
    assert_blob_files_intact,
    blob_files,
    get_blob,
    group,
    logs,
    namespace,
    published_blobs,
    pull_image,
    push_blob,
    push_new_image,
    sha256,
    upstream,
    write_config,
)

ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def proxies() -> Iterator[Callable[..., FaultProxy]]:
    started: list[FaultProxy] = []

    def make(target: Registry, name: str = "proxy") -> FaultProxy:
        p = FaultProxy(target.host, name=name).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def mirror_with(server_factory: ServerFactory, tmp_path: Path,
                *upstreams: dict[str, Any], **group_kw: Any) -> LiveServer:
    cfg = write_config(tmp_path / f"mirror-{uuid.uuid4().hex[:6]}.yml",
                       {"main": group(*upstreams, **group_kw)}, [namespace()],
                       node_id="mirror-under-test")
    return server_factory("--config", str(cfg))


def stream_blob(url: str, timeout: float = 30) -> tuple[int, bytes, Exception | None]:
    """GET a blob, reading the body to its end; (status, bytes received, transfer error)."""
    got = bytearray()
    try:
        with requests.get(url, stream=True, timeout=timeout) as r:
            status = r.status_code
            for chunk in r.iter_content(256 * 1024):
                got += chunk
    except (requests.RequestException, ConnectionError) as e:
        return -1 if not got else 200, bytes(got), e
    return status, bytes(got), None


def stream_concurrently(url: str, clients: int, timeout: float
                        ) -> list[tuple[int, bytes, Exception | None]]:
    """`stream_blob` from `clients` threads at once; the results of those that finished
    within timeout + 30 s (an assertion on their number catches a hung client)."""
    results: list[tuple[int, bytes, Exception | None]] = []
    lock = threading.Lock()

    def client() -> None:
        res = stream_blob(url, timeout=timeout)
        with lock:
            results.append(res)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    return results


# -- the tool itself -------------------------------------------------------------------------
def test_faultproxy_modes(hosted: LiveServer, proxies: Callable[..., FaultProxy]) -> None:
    """Each mode does what the mirror tests rely on, seen from a plain HTTP client."""
    repo = unique("proxycheck")
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = push_blob(hosted.url, repo, data)
    p = proxies(hosted)
    url = f"{p.url}/v2/{repo}/blobs/{digest}"

    assert stream_blob(url) == (200, data, None)
    assert p.body_bytes(digest) == len(data)
    assert p.forwarded_bytes > len(data)  # plus the response head

    p.set("cut", after=300_000)
    status, got, err = stream_blob(url)
    assert err is not None and "300000 bytes read" in str(err), (status, len(got), err)
    assert len(got) <= 300_000 and got == data[:len(got)]
    assert stream_blob(url) == (200, data, None), "cut is one-shot by default"

    p.set("corrupt", offset=12345)
    status, got, err = stream_blob(url)
    assert status == 200 and err is None and len(got) == len(data)
    assert [i for i in range(len(data)) if got[i] != data[i]] == [12345]
    p.set("pass")

    for code in (503, 429):
        p.set("status", code=code)
        r = requests.get(url, timeout=10)
        assert r.status_code == code and p.requests()[-1].fault == f"status {code}"
    p.set("pass")
    r = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert r.status_code == 206 and r.content == data[1000:2000]

    p.set("stall", after=5000, seconds=1.0)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):  # read timeout mid-body
        requests.get(url, timeout=(5, 0.3)).content  # noqa: B018
    assert time.monotonic() - started < 1.0
    p.set("pass")

    p.set("refuse")
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
            ("127.0.0.1", p.port), timeout=2):
        pass
    p.set("reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=5)
    p.set("pass")
    assert stream_blob(url) == (200, data, None)


# -- cut, stall ------------------------------------------------------------------------------
def test_cut_mid_blob_resumes_with_range(server_factory: ServerFactory, tmp_path: Path,
                                         origin: Registry,
                                         proxies: Callable[..., FaultProxy]) -> None:
    size, cut = 8 * MiB, 5 * MiB + 1234
    img = push_new_image(origin.url, unique("cut"), "v1", (size,))
    layer = img.layers[0]
    p = proxies(origin)
    mirror = mirror_with(server_factory, tmp_path, upstream(p.url))
    p.set("cut", after=cut, match=layer)

    status, got, err = stream_blob(f"{mirror.url}/v2/{img.repo}/blobs/{layer}")
    assert (status, err) == (200, None) and sha256(got) == layer, (
        f"{status} {err} {len(got)} bytes\n{p.summary()}\n{mirror.log()[-3000:]}")
    gets = p.requests(layer, "GET")
    assert len(gets) == 2, p.summary()
    assert gets[0].fault == "cut" and gets[0].body_bytes == cut, p.summary()
    resumed_at = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    # from the last byte received: what the HTTP client had buffered when the cut came is
    # kept too, so exactly one blob's worth crosses the proxy (a restart costs size + cut)
    assert resumed_at == cut and gets[1].status == 206, p.summary()
    assert p.body_bytes(layer) == size, p.summary()
    # and it is cached: the rest of the image too, with nothing more for this blob
    pull_image(mirror.url, img, log=mirror.log)
    assert p.count(layer) == 2
    assert_blob_files_intact(mirror.data_dir)
    # nothing of the finished fetches stays behind in fetch/ (lock files included)
    fetch_dir = mirror.data_dir / "fetch"
    deadline = time.monotonic() + 10
    while any(fetch_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(f.name for f in fetch_dir.iterdir()) == []


@pytest.mark.parametrize("where", ["same-upstream", "failover"])
def test_stall_hits_read_timeout_and_resumes(server_factory: ServerFactory, tmp_path: Path,
                                             reference: ReferenceRegistry,
                                             proxies: Callable[..., FaultProxy],
                                             where: str) -> None:
    size, stall_at, read_timeout = 6 * MiB, 2 * MiB, 1.0
    img = push_new_image(reference.url, unique("stall"), "v1", (size,))
    layer = img.layers[0]
    primary = proxies(reference, "primary")
    backup = proxies(reference, "backup")
    if where == "same-upstream":  # one stall, then the same upstream serves the rest
        primary.set("stall", after=stall_at, seconds=30, match=layer)
        ups = [upstream(primary.url)]
    else:  # stalls every time; one failure takes it out (max_fails 1)
        primary.set("stall", after=stall_at, seconds=30, match=layer, times=100)
        ups = [upstream(primary.url, max_fails=1, fail_timeout=60),
               upstream(backup.url, backup=True)]
    mirror = mirror_with(server_factory, tmp_path, *ups, read_timeout=read_timeout)

    started = time.monotonic()
    status, got, err = stream_blob(f"{mirror.url}/v2/{img.repo}/blobs/{layer}")
    elapsed = time.monotonic() - started
    first = primary.requests(layer, "GET")[0]
    stalled_bytes = first.body_bytes  # before the release below lets the rest through
    total = primary.body_bytes(layer) + backup.body_bytes(layer)
    primary.set("pass")  # release the stalled transfer
    summary = f"{primary.summary()}\n{backup.summary()}\n{mirror.log()[-3000:]}"
    assert (status, err) == (200, None) and sha256(got) == layer, summary
    assert read_timeout <= elapsed < read_timeout + 5, f"{elapsed:.2f}s\n{summary}"
    assert first.fault == "stall" and stalled_bytes == stall_at, summary
    resumed = (primary if where == "same-upstream" else backup).requests(layer, "GET")[-1]
    assert resumed.headers.get("range") == f"bytes={stall_at}-", summary
    assert resumed.status == 206 and resumed.body_bytes == size - stall_at, summary
    assert total == size, summary
    if where == "failover":
        assert len(primary.requests(layer)) == 1, summary
    pull_image(mirror.url, img, log=mirror.log)


# -- error answers and dead upstreams -> the backup serves ---------------------------------
@pytest.mark.parametrize("fault", ["503", "429", "refuse", "reset"])
def test_failing_primary_fails_over_to_backup(server_factory: ServerFactory, tmp_path: Path,
                                              reference: ReferenceRegistry,
                                              proxies: Callable[..., FaultProxy],
                                              fault: str) -> None:
    repo = unique("failover")
    img = push_new_image(reference.url, repo, "v1", (MiB, 256 * 1024))
    primary = proxies(reference, "primary")
    backup_origin = proxies(reference, "backup")
    if fault in ("503", "429"):
        primary.set("status", code=int(fault))
    else:
        primary.set(fault)
    mirror = mirror_with(server_factory, tmp_path, upstream(primary.url),
                         upstream(backup_origin.url, backup=True))
    started = time.monotonic()
    pull_image(mirror.url, img, log=logs(mirror))
    elapsed = time.monotonic() - started
    summary = f"{primary.summary()}\n{backup_origin.summary()}"
    assert elapsed < 5, f"failover took {elapsed:.1f}s\n{summary}"
    if fault in ("503", "429"):
        answered = primary.requests()
        assert answered and all(e.fault == f"status {fault}" for e in answered), summary
    elif fault == "reset":
        assert primary.accepted >= 1, summary
    else:
        assert primary.accepted == 0, summary
    for digest, data in img.blobs.items():
        assert backup_origin.body_bytes(digest) == len(data), summary
        assert primary.body_bytes(digest) == 0, summary
    # the primary comes back: new content is served from it again (health recovers)
    primary.set("pass")
    later = push_new_image(reference.url, unique("failover-later"), "v1")
    pull_image(mirror.url, later, log=logs(mirror))
    assert_blob_files_intact(mirror.data_dir)


def test_primary_upstream_answers_after_fail_timeout(server_factory: ServerFactory,
                                                     tmp_path: Path,
                                                     reference: ReferenceRegistry,
                                                     proxies: Callable[..., FaultProxy]) -> None:
    """A primary marked down is skipped for fail_timeout, then used again."""
    primary, backup = proxies(reference, "primary"), proxies(reference, "backup")
    mirror = mirror_with(server_factory, tmp_path,
                         upstream(primary.url, max_fails=1, fail_timeout=1.5),
                         upstream(backup.url, backup=True))
    primary.set("status", code=503)
    a = push_new_image(reference.url, unique("down"), "v1")
    pull_image(mirror.url, a, log=mirror.log)
    primary.set("pass")
    primary.reset_counters()
    b = push_new_image(reference.url, unique("down"), "v1")
    pull_image(mirror.url, b, log=mirror.log)
    assert primary.count() == 0, "a down primary is skipped\n" + primary.summary()
    time.sleep(1.6)
    c = push_new_image(reference.url, unique("down"), "v1")
    backup.reset_counters()
    pull_image(mirror.url, c, log=mirror.log)
    assert primary.count(c.repo) >= 2 and backup.count() == 0, (
        primary.summary() + "\n" + backup.summary())


# -- corruption ------------------------------------------------------------------------------
def test_corrupt_upstream_bytes_are_never_cached(server_factory: ServerFactory, tmp_path: Path,
                                                 origin: Registry,
                                                 proxies: Callable[..., FaultProxy]) -> None:
    size, offset = 4 * MiB, MiB + 7
    img = push_new_image(origin.url, unique("corrupt"), "v1", (size,))
    layer = img.layers[0]
    p = proxies(origin)
    # throttled, so the clients below are streaming while the bad byte goes through
    p.set("corrupt", offset=offset, match=layer, rate=8 * MiB)
    mirror = mirror_with(server_factory, tmp_path, upstream(p.url))
    url = f"{mirror.url}/v2/{img.repo}/blobs/{layer}"

    results = stream_concurrently(url, 3, timeout=30)
    summary = f"{p.summary()}\n{mirror.log()[-3000:]}"
    assert len(results) == 3, summary
    for status, got, err in results:
        # never a clean end with wrong bytes: the transfer breaks, the body is short
        assert err is not None, f"clean {status} with {len(got)} bytes\n{summary}"
        assert len(got) < size and sha256(got) != layer, summary
    assert p.requests(layer, "GET")[0].fault == "corrupt", summary
    assert layer not in blob_files(mirror.data_dir), "corrupt blob was stored"
    assert_blob_files_intact(mirror.data_dir)

    # fixed upstream: the next request fetches again and gets it right
    p.set("pass")
    assert_blob(get_blob(mirror.url, img.repo, layer), layer, img.blobs[layer], mirror.log)
    assert layer in published_blobs(mirror.data_dir, {layer})
    assert assert_blob_files_intact(mirror.data_dir) >= 1
    assert p.count(layer, "GET") == 2, p.summary()


def test_complete_part_of_a_stopped_leader_is_published_without_upstream(
        server_factory: ServerFactory, tmp_path: Path, origin: Registry,
        proxies: Callable[..., FaultProxy]) -> None:
    """A leader killed after its digest matched but before the publish leaves a complete
    .part: the next request verifies and publishes it, with every upstream down."""
    size = 3 * MiB + 5
    img = push_new_image(origin.url, unique("left"), "v1", (size,))
    layer = img.layers[0]
    p = proxies(origin)
    mirror = mirror_with(server_factory, tmp_path, upstream(p.url))
    fetch_dir = mirror.data_dir / "fetch"
    fetch_dir.mkdir(exist_ok=True)
    key = layer.replace(":", "-")
    (fetch_dir / f"{key}.part").write_bytes(img.blobs[layer])
    (fetch_dir / f"{key}.size").write_text(str(size))
    p.set("refuse")

    status, got, err = stream_blob(f"{mirror.url}/v2/{img.repo}/blobs/{layer}")
    assert (status, err) == (200, None) and sha256(got) == layer, (
        f"{status} {err} {len(got)} bytes\n{p.summary()}\n{mirror.log()[-3000:]}")
    assert layer in published_blobs(mirror.data_dir, {layer}), mirror.log()[-3000:]
    assert p.count(layer) == 0, p.summary()
    assert_blob_files_intact(mirror.data_dir)


def test_cut_during_coalesced_pulls_across_workers(server_factory: ServerFactory,
                                                   tmp_path: Path, reference: ReferenceRegistry,
                                                   proxies: Callable[..., FaultProxy]) -> None:
    """Eight clients on two worker processes stream one cold blob; the single upstream
    transfer is cut halfway: it resumes, and every client gets every byte."""
    size, cut = 24 * MiB, 10 * MiB
    img = push_new_image(reference.url, unique("coalesce"), "v1", (size,))
    layer = img.layers[0]
    p = proxies(reference)
    p.set("cut", after=cut, match=layer, rate=16 * MiB)
    cfg = write_config(tmp_path / "workers.yml", {"main": group(upstream(p.url))},
                       [namespace()], node_id="two-workers")
    mirror = server_factory("--config", str(cfg), workers=2)
    url = f"{mirror.url}/v2/{img.repo}/blobs/{layer}"
    results = stream_concurrently(url, 8, timeout=60)
    summary = f"{p.summary()}\n{mirror.log()[-3000:]}"
    assert len(results) == 8, summary
    for status, got, err in results:
        assert (status, err) == (200, None) and sha256(got) == layer, (
            f"{status} {err} {len(got)}\n{summary}")
    gets = p.requests(layer, "GET")
    assert gets[0].fault == "cut" and len(gets) == 2, summary
    assert "range" in gets[1].headers, summary
    assert size <= p.body_bytes(layer) <= size + 512 * 1024, summary
    assert_blob_files_intact(mirror.data_dir)
