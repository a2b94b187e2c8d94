"""Slow and greedy clients (api/connections.py) against a real server: a slowloris crowd
neither starves other clients nor keeps its connections, a stalled body ends with 408, and
one address cannot hold more than its share of connections."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator

import requests

from tests.support.live import LiveServer
from tests.support.oci_http import Api, MiB, random_bytes, send_partial

TIMEOUT = 10
HEADER_TIMEOUT = 2


def _guards(header: float = HEADER_TIMEOUT, body: float = 60, per_client: int = 256,
            ) -> dict[str, str]:
    return {"STABLEMIRROR_CONNECTIONS__HEADER_TIMEOUT_SECONDS": str(header),
            "STABLEMIRROR_CONNECTIONS__BODY_IDLE_TIMEOUT_SECONDS": str(body),
            "STABLEMIRROR_CONNECTIONS__MAX_PER_CLIENT": str(per_client)}


def _connect(srv: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(TIMEOUT)
    s.bind((source, 0))
    s.connect(("127.0.0.1", srv.port))
    return s


def _closed_by_peer(s: socket.socket) -> bool:
    """True once the server closed `s` (EOF or reset); never blocks."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        return s.recv(4096) == b""
    except OSError:
        return True


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for s in opened:
            s.close()


def test_slowloris_crowd_is_cut_off_and_never_starves_others(
        server_factory: Callable[..., LiveServer]) -> None:
    srv = server_factory(env=_guards())
    request = f"GET /v2/ HTTP/1.1\r\nHost: {srv.host}\r\nX-Slow: {'a' * 40}\r\n\r\n".encode()
    with _sockets() as slow:
        started = time.monotonic()
        for _ in range(50):
            slow.append(_connect(srv))
        open_since = {id(s): time.monotonic() for s in slow}
        closed_after: dict[int, float] = {}
        normal_latencies: list[float] = []
        for tick in range(HEADER_TIMEOUT + 5):  # a byte a second, bounded
            for s in slow:
                if id(s) in closed_after:
                    continue
                if _closed_by_peer(s):
                    closed_after[id(s)] = time.monotonic() - open_since[id(s)]
                    continue
                with contextlib.suppress(OSError):
                    s.send(request[tick:tick + 1])
            t0 = time.monotonic()
            r = requests.get(f"{srv.url}/v2/", timeout=TIMEOUT)
            normal_latencies.append(time.monotonic() - t0)
            assert r.status_code == 200
            if len(closed_after) == len(slow):
                break
            time.sleep(1)
        for s in slow:
            if id(s) not in closed_after and _closed_by_peer(s):
                closed_after[id(s)] = time.monotonic() - open_since[id(s)]
        assert len(closed_after) == len(slow), (
            f"{len(slow) - len(closed_after)} slow connections still open after "
            f"{time.monotonic() - started:.1f}s")
        assert max(closed_after.values()) < HEADER_TIMEOUT + 3, closed_after
        assert min(closed_after.values()) >= HEADER_TIMEOUT - 0.5, closed_after
        assert max(normal_latencies) < 2.0, normal_latencies  # 2 busy cores: slack
    assert srv.proc is not None and srv.proc.poll() is None


def test_header_deadline_restarts_for_each_kept_alive_request(
        server_factory: Callable[..., LiveServer]) -> None:
    """A client that answers a request quickly, then trickles the next one, is cut off too;
    a client that takes its time between requests but sends each whole is not."""
    srv = server_factory(env=_guards())
    with _sockets() as opened:
        s = _connect(srv)
        opened.append(s)
        whole = f"GET /v2/ HTTP/1.1\r\nHost: {srv.host}\r\n\r\n".encode()
        for _ in range(2):
            s.sendall(whole)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(HEADER_TIMEOUT + 0.5)  # idle between requests is keep-alive's business
        s.sendall(b"GET /v2/ HTTP/1.1\r\n")
        deadline = time.monotonic() + HEADER_TIMEOUT + 3
        closed = False
        while not closed and time.monotonic() < deadline:
            time.sleep(0.1)
            closed = _closed_by_peer(s)
        assert closed, "a trickled request on a kept-alive connection was kept open"


def test_a_stalled_body_ends_with_408_and_the_session_keeps_its_offset(
        server_factory: Callable[..., LiveServer]) -> None:
    srv = server_factory(env=_guards(header=10, body=2))
    api = Api(srv)
    first = random_bytes(MiB)
    location = api.start_upload("slow/body")
    assert api.patch(location, first, start=0).status_code == 202
    s = send_partial(srv, "PATCH", location, declared=MiB, sent=random_bytes(1000))
    with _sockets() as opened:
        opened.append(s)
        t0 = time.monotonic()
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 1.5 < time.monotonic() - t0 < 6
    status = api.get(location)
    assert status.headers["Range"] == f"0-{MiB - 1}"


def test_one_address_cannot_take_every_connection(
        server_factory: Callable[..., LiveServer]) -> None:
    srv = server_factory(env=_guards(header=30, per_client=5))
    with _sockets() as opened:
        for _ in range(5):
            opened.append(_connect(srv))
        time.sleep(0.3)
        extra = _connect(srv)
        opened.append(extra)
        answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert extra.recv(65536) == b""  # and closed
        # Other addresses are served meanwhile, and so is this one when it frees a slot.
        other = _connect(srv, source="127.0.0.2")
        opened.append(other)
        other.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {srv.host}\r\n\r\n".encode())
        assert other.recv(65536).startswith(b"HTTP/1.1 200")
        opened[0].close()
        time.sleep(0.3)
        assert requests.get(f"{srv.url}/v2/", timeout=TIMEOUT).status_code == 200


def test_a_stalled_token_request_body_ends_with_408(
        server_factory: Callable[..., LiveServer]) -> None:
    srv = server_factory("--auth", env={**_guards(header=10, body=2),
                                        "STABLEMIRROR_ADMIN_PASSWORD": "pw-slow-body"})
    with _sockets() as opened:
        s = _connect(srv)
        opened.append(s)
        s.sendall(f"POST /token HTTP/1.1\r\nHost: {srv.host}\r\nContent-Length: 200\r\n"
                  "Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type=".encode())
        t0 = time.monotonic()
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 1.5 < time.monotonic() - t0 < 6
    # and a token request sent whole still works
    r = requests.post(f"{srv.url}/token", data={"grant_type": "password", "username": "admin",
                                                "password": "pw-slow-body",
                                                "service": "stablemirror"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
