"""A minimal HTTP/1.1 client.  Request bodies are streamed from a file with sendfile(2), so
a 1 GiB test blob never enters Python memory and the client costs next to no CPU."""

from __future__ import annotations

import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from harness.common import HOST, BenchError, MiB


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def _recv_response(sock: socket.socket, method: str, max_body: int) -> Response:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed before response headers")
        buf += chunk
        if len(buf) > 1 * MiB:
            raise BenchError("response headers too large")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    body = bytearray(rest)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(status, reason, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return Response(status, reason, headers, _read_chunked(sock, body, max_body))
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > max_body:
            raise BenchError(f"response body of {length} bytes exceeds {max_body}")
        while len(body) < length:
            chunk = sock.recv(min(1 * MiB, length - len(body)))
            if not chunk:
                raise BenchError("connection closed mid-body")
            body += chunk
        return Response(status, reason, headers, bytes(body[:length]))
    while True:  # read to EOF (we always send Connection: close)
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
        if len(body) > max_body:
            raise BenchError("response body too large")
    return Response(status, reason, headers, bytes(body))


def _read_chunked(sock: socket.socket, pending: bytearray, max_body: int) -> bytes:
    out = bytearray()
    buf = pending

    def fill(n: int) -> None:
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError("connection closed in chunked body")
            buf.extend(chunk)

    while True:
        while b"\r\n" not in buf:
            fill(len(buf) + 1)
        line, _, remainder = bytes(buf).partition(b"\r\n")
        buf[:] = remainder
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        fill(size + 2)
        out += buf[:size]
        del buf[: size + 2]
        if len(out) > max_body:
            raise BenchError("response body too large")


def http(
    port: int,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    body_file: Path | None = None,
    offset: int = 0,
    count: int | None = None,
    timeout: float = 30.0,
    max_body: int = 16 * MiB,
) -> Response:
    """One request on a fresh connection.  `body_file[offset:offset+count]` is sent with
    sendfile(2) when given, else `body`."""
    hdrs = {"Host": f"{HOST}:{port}", "User-Agent": "stablemirror-bench/1", "Connection": "close"}
    hdrs.update(headers or {})
    if body_file is not None:
        if count is None:
            count = body_file.stat().st_size - offset
        length = count
    else:
        length = len(body)
    if method in ("POST", "PUT", "PATCH") or length:
        hdrs["Content-Length"] = str(length)
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        send_error: OSError | None = None
        try:
            if body_file is not None:
                with body_file.open("rb") as f:
                    sent = sock.sendfile(f, offset, count)
                if sent != count:
                    raise BenchError(f"sendfile sent {sent} of {count} bytes")
            elif body:
                sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError) as exc:
            send_error = exc  # the server may have answered early with an error
        try:
            return _recv_response(sock, method, max_body)
        except (OSError, BenchError) as exc:
            if send_error is not None:
                raise BenchError(f"{method} {target}: {send_error}") from exc
            raise


def expect(resp: Response, statuses: tuple[int, ...], what: str) -> Response:
    if resp.status not in statuses:
        detail = resp.body[:300].decode("utf-8", "replace")
        raise BenchError(f"{what}: HTTP {resp.status} {resp.reason} (wanted {statuses}) {detail}")
    return resp


def location_target(resp: Response, port: int, what: str) -> str:
    """The path+query of a Location header (absolute or relative); loopback only."""
    loc = resp.header("location")
    if not loc:
        raise BenchError(f"{what}: no Location header")
    url = urllib.parse.urljoin(f"http://{HOST}:{port}/", loc)
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname not in (HOST, "localhost") or (parsed.port or 80) != port:
        raise BenchError(f"{what}: Location points off this server: {loc}")
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def with_digest(target: str, digest: str) -> str:
    sep = "&" if "?" in target else "?"
    return f"{target}{sep}digest={urllib.parse.quote(digest, safe='')}"

