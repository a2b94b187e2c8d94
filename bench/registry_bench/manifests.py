"""Manifest GET load: a small OCI image pushed and read back, then wrk against it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from harness.client import expect, http
from harness.common import BENCH_DIR, HOST, BenchError
from harness.transfers import push_small_blob

LUA_SCRIPT = BENCH_DIR / "manifest_get.lua"  # sets the OCI/Docker Accept header

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT_MANIFESTS = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json"
)


@dataclass
class ImageRef:
    repo: str
    tag: str
    digest: str
    body: bytes


def push_image(port: int, repo: str, tag: str, seed: bytes) -> ImageRef:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench": seed.hex()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        },
        separators=(",", ":"),
    ).encode()
    cfg_digest, cfg_size = push_small_blob(port, repo, config)
    layers = []
    for i in range(3):
        d, s = push_small_blob(port, repo, seed + bytes([i]) + os.urandom(4096))
        layers.append({"mediaType": OCI_LAYER, "digest": d, "size": s})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": cfg_size},
            "layers": layers,
            "annotations": {"org.opencontainers.image.title": "stablemirror-bench"},
        },
        indent=2,
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    resp = http(
        port,
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        headers={"Content-Type": OCI_MANIFEST},
        body=manifest,
    )
    expect(resp, (201,), "PUT manifest")
    ref = ImageRef(repo, tag, digest, manifest)
    for what in (tag, digest):
        got = expect(
            http(port, "GET", f"/v2/{repo}/manifests/{what}", headers={"Accept": ACCEPT_MANIFESTS}),
            (200,),
            f"GET manifest {what}",
        )
        if got.body != manifest:
            raise BenchError(f"GET manifest {what}: body differs from what was pushed")
        if got.header("docker-content-digest") not in ("", digest):
            raise BenchError(f"GET manifest {what}: wrong Docker-Content-Digest")
        if not got.header("content-type").startswith(OCI_MANIFEST):
            raise BenchError(f"GET manifest {what}: Content-Type {got.header('content-type')!r}")
    return ref


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_REQS = re.compile(r"(\d+) requests in")
_WRK_PCT = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def warm_wrk(port: int, path: str, threads: int, conns: int, duration: int) -> None:
    """Untimed load so lazy imports, caches and connection pools settle first."""
    url = f"http://{HOST}:{port}{path}"
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "-s", str(LUA_SCRIPT), url]
    subprocess.run(argv, capture_output=True, timeout=duration + 30)


def run_wrk(port: int, path: str, threads: int, conns: int, duration: int) -> dict[str, Any]:
    url = f"http://{HOST}:{port}{path}"
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    out = proc.stdout
    m = _WRK_RPS.search(out)
    if proc.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()} {out[-500:]}")
    m_non2xx = _WRK_NON2XX.search(out)
    non2xx = int(m_non2xx.group(1)) if m_non2xx else 0
    sock = _WRK_SOCKERR.search(out)
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    m_total = _WRK_REQS.search(out)
    total = int(m_total.group(1)) if m_total else 0
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {f"p{p}": float(v) * scale[u] for p, v, u in _WRK_PCT.findall(out)}
    if non2xx or sock_errors:
        raise BenchError(
            f"wrk saw {non2xx} non-2xx responses and {sock_errors} socket errors "
            f"of {total} requests:\n{out}"
        )
    return {"rps": float(m.group(1)), "requests": total, "latency_ms": lat}

