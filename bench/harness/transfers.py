"""Blob transfers against a registry: monolithic and chunked pushes (bodies sent with
sendfile(2)), and GETs with curl, timed or hashed and checked."""

from __future__ import annotations

import hashlib
import subprocess
import time

from harness.client import Response, expect, http, location_target, with_digest
from harness.common import HOST, BenchError, MiB
from harness.data import Blob


def push_monolithic(port: int, repo: str, blob: Blob, timeout: float) -> float:
    t0 = time.perf_counter()
    resp = expect(http(port, "POST", f"/v2/{repo}/blobs/uploads/"), (202,), "POST upload")
    target = with_digest(location_target(resp, port, "POST upload"), blob.digest)
    resp = http(
        port,
        "PUT",
        target,
        headers={"Content-Type": "application/octet-stream"},
        body_file=blob.path,
        timeout=timeout,
    )
    expect(resp, (201,), "PUT monolithic")
    elapsed = time.perf_counter() - t0
    check_pushed(port, repo, blob, resp)
    return blob.size / elapsed / 1e6


def push_chunked(port: int, repo: str, blob: Blob, chunk: int, timeout: float) -> float:
    t0 = time.perf_counter()
    resp = expect(http(port, "POST", f"/v2/{repo}/blobs/uploads/"), (202,), "POST upload")
    target = location_target(resp, port, "POST upload")
    offset = 0
    n = 0
    while offset < blob.size and n < 100_000:
        count = min(chunk, blob.size - offset)
        resp = http(
            port,
            "PATCH",
            target,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + count - 1}",
            },
            body_file=blob.path,
            offset=offset,
            count=count,
            timeout=timeout,
        )
        expect(resp, (202,), f"PATCH chunk {n} at {offset}")
        rng = resp.header("range")
        if rng and rng != f"0-{offset + count - 1}":
            raise BenchError(f"PATCH chunk {n}: Range {rng!r}, wanted 0-{offset + count - 1}")
        target = location_target(resp, port, f"PATCH chunk {n}")
        offset += count
        n += 1
    resp = http(port, "PUT", with_digest(target, blob.digest), timeout=timeout)
    expect(resp, (201,), "PUT (close chunked upload)")
    elapsed = time.perf_counter() - t0
    check_pushed(port, repo, blob, resp)
    return blob.size / elapsed / 1e6


def check_pushed(port: int, repo: str, blob: Blob, put_resp: Response) -> None:
    got = put_resp.header("docker-content-digest")
    if got and got != blob.digest:
        raise BenchError(f"PUT answered Docker-Content-Digest {got}, wanted {blob.digest}")
    resp = expect(http(port, "HEAD", f"/v2/{repo}/blobs/{blob.digest}"), (200,), "HEAD blob")
    if int(resp.header("content-length", "-1")) != blob.size:
        raise BenchError(f"HEAD blob: Content-Length {resp.header('content-length')}")



def push_small_blob(port: int, repo: str, data: bytes) -> tuple[str, int]:
    """POST + PUT of a few bytes; their digest and size."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = expect(http(port, "POST", f"/v2/{repo}/blobs/uploads/"), (202,), "POST upload")
    target = with_digest(location_target(resp, port, "POST upload"), digest)
    headers = {"Content-Type": "application/octet-stream"}
    expect(http(port, "PUT", target, headers=headers, body=data), (201,), "PUT small blob")
    return digest, len(data)


def curl_get(port: int, repo: str, blob: Blob, timeout: float) -> dict[str, float]:
    """One timed GET with curl to /dev/null: TTFB and total time (s), bytes (checked), MB/s."""
    url = f"http://{HOST}:{port}/v2/{repo}/blobs/{blob.digest}"
    argv = [
        "curl",
        "-sS",
        "-L",
        "--max-redirs",
        "3",
        "-o",
        "/dev/null",
        "--max-time",
        str(int(timeout)),
        "-w",
        "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
    parts = proc.stdout.split()
    if proc.returncode != 0 or len(parts) != 4:
        raise BenchError(f"curl GET failed ({proc.returncode}): {proc.stderr.strip()}")
    code, ttfb, total, size = int(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])
    if code != 200 or size != blob.size:
        raise BenchError(f"blob GET: HTTP {code}, {size} bytes (wanted 200, {blob.size})")
    return {"ttfb": ttfb, "total": total, "bytes": size, "mbps": size / total / 1e6}


def get_blob_curl(port: int, repo: str, blob: Blob, timeout: float) -> float:
    """MB/s of one curl GET of the blob."""
    return curl_get(port, repo, blob, timeout)["mbps"]


def verify_blob_get(port: int, repo: str, blob: Blob, timeout: float) -> str:
    """Untimed full GET through curl, hashed as it streams, compared with the blob digest."""
    url = f"http://{HOST}:{port}/v2/{repo}/blobs/{blob.digest}"
    argv = ["curl", "-sS", "-f", "-L", "--max-redirs", "3", "--max-time", str(int(timeout)), url]
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(4 * MiB):
            h.update(chunk)
            n += len(chunk)
        _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"verify GET: curl exit {proc.returncode}: {err.decode(errors='replace')}")
    if n != blob.size or "sha256:" + h.hexdigest() != blob.digest:
        raise BenchError(f"verify GET: got {n} bytes with a different digest")
    return "ok"


def range_checks(port: int, repo: str, blob: Blob) -> str:
    """Two Range GETs (a middle slice and an open-ended tail) compared with the file."""
    checks = [(blob.size // 2 + 12345, 65536), (blob.size - 1000, None)]
    with blob.path.open("rb") as f:
        for start, length in checks:
            end = blob.size - 1 if length is None else start + length - 1
            spec = f"bytes={start}-" if length is None else f"bytes={start}-{end}"
            resp = http(port, "GET", f"/v2/{repo}/blobs/{blob.digest}", headers={"Range": spec})
            if resp.status in (301, 302, 303, 307, 308):
                return f"redirect {resp.status} (not followed)"
            expect(resp, (206,), f"Range GET {spec}")
            want_cr = f"bytes {start}-{end}/{blob.size}"
            if resp.header("content-range") != want_cr:
                got_cr = resp.header("content-range")
                raise BenchError(f"Range GET {spec}: Content-Range {got_cr!r}")
            f.seek(start)
            if resp.body != f.read(end - start + 1):
                raise BenchError(f"Range GET {spec}: body differs from the file")
    return "ok"

