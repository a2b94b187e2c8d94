"""Helpers for the per-endpoint functional tests (tests/functional/test_api_*.py).

A thin `requests` wrapper around one LiveServer, builders for the four manifest kinds,
raw-socket HTTP for what `requests` refuses to send (or sends whole), and checks of the
data directory: which blob files exist and that every one of them hashes to its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from tests.support.live import LiveServer

MiB = 1024 * 1024

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
TIMEOUT = 60


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def descriptor(data: bytes, media_type: str, algorithm: str = "sha256",
               **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data, algorithm), "size": len(data),
            **extra}


def error_codes(r: requests.Response) -> list[str]:
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("errors"), list), r.text
    for e in doc["errors"]:
        assert set(e) >= {"code", "message"}, e
    return [e["code"] for e in doc["errors"]]


def assert_error(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert code in error_codes(r), r.text
    assert r.headers.get("Docker-Distribution-API-Version") == "registry/2.0"


# -- the data directory ---------------------------------------------------------------------
def blob_files(data_dir: Path) -> set[str]:
    """Committed blob files, as `algorithm:hex` taken from their paths."""
    root = data_dir / "blobs"
    if not root.exists():
        return set()
    return {f"{p.parent.parent.name}:{p.name}" for p in root.rglob("*") if p.is_file()}


def upload_dirs(data_dir: Path) -> set[str]:
    root = data_dir / "uploads"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def assert_blob_files_intact(data_dir: Path) -> None:
    """Every file under blobs/ hashes to its own name: nothing partial or corrupt."""
    root = data_dir / "blobs"
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        algorithm = p.parent.parent.name
        assert p.parent.name == p.name[:2], p
        h = hashlib.new(algorithm)
        with p.open("rb") as f:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        assert h.hexdigest() == p.name, f"corrupt blob file {p}"


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


# -- raw HTTP -------------------------------------------------------------------------------
@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_raw(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return RawResponse(status, headers, body)


def raw_request(server: LiveServer, method: str, target: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> RawResponse:
    """One request sent byte for byte (no URL normalisation), on its own connection."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {server.host}", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return parse_raw(b"".join(chunks))


def send_partial(server: LiveServer, method: str, target: str, declared: int,
                 sent: bytes) -> socket.socket:
    """Start a request declaring `declared` body bytes, send only `sent`, keep it open."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    head = (f"{method} {target} HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n")
    s.sendall(head.encode() + sent)
    return s


# -- a client for one registry ------------------------------------------------------------------
class Api:
    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.base = server.url
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        return self.http.request(method, self.url(path), **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw: Any) -> requests.Response:
        return self.request("HEAD", path, **kw)

    # blobs
    def push_blob(self, repo: str, data: bytes, algorithm: str = "sha256") -> str:
        d = digest_of(data, algorithm)
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": d}, data=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == d
        return d

    def start_upload(self, repo: str) -> str:
        """POST a session; returns its Location path."""
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        return r.headers["Location"]

    def patch(self, location: str, data: bytes, start: int | None = None) -> requests.Response:
        headers = {"Content-Type": "application/octet-stream"}
        if start is not None:
            headers["Content-Range"] = f"{start}-{start + len(data) - 1}"
        return self.request("PATCH", location, data=data, headers=headers)

    def finish(self, location: str, digest: str, data: bytes | None = None) -> requests.Response:
        return self.request("PUT", location, params={"digest": digest}, data=data,
                            headers={"Content-Type": "application/octet-stream"})

    def blob(self, repo: str, digest: str) -> requests.Response:
        return self.get(f"/v2/{repo}/blobs/{digest}")

    # manifests
    def put_manifest(self, repo: str, reference: str, body: bytes,
                     content_type: str | None, **kw: Any) -> requests.Response:
        headers = {} if content_type is None else {"Content-Type": content_type}
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}", data=body,
                            headers=headers, **kw)

    def manifest(self, repo: str, reference: str, method: str = "GET") -> requests.Response:
        accept = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
        return self.request(method, f"/v2/{repo}/manifests/{reference}",
                            headers={"Accept": accept})

    def push_image(self, repo: str, tag: str | None = None, *, media_type: str = OCI_MANIFEST,
                   layers: int = 1, layer_size: int = 512, declare_type: bool = True,
                   algorithm: str = "sha256", **extra: Any) -> tuple[str, bytes]:
        """Push config + layers + manifest; returns (manifest digest, manifest bytes)."""
        docker = media_type == DOCKER_MANIFEST
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "nonce": random_bytes(8).hex()}).encode()
        self.push_blob(repo, config, algorithm)
        layer_descs = []
        for _ in range(layers):
            data = random_bytes(layer_size)
            self.push_blob(repo, data, algorithm)
            layer_descs.append(descriptor(data, DOCKER_LAYER if docker else OCI_LAYER,
                                          algorithm))
        body = image_manifest(
            descriptor(config, DOCKER_CONFIG if docker else OCI_CONFIG, algorithm),
            layer_descs, media_type if declare_type else None, **extra)
        digest = digest_of(body, algorithm)
        r = self.put_manifest(repo, tag or digest, body, media_type)
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == digest
        return digest, body


def image_manifest(config: dict[str, Any], layers: list[dict[str, Any]],
                   media_type: str | None = OCI_MANIFEST, **extra: Any) -> bytes:
    body: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        body["mediaType"] = media_type
    body["config"] = config
    body["layers"] = layers
    body.update(extra)
    return json.dumps(body, indent=2).encode()


def index_manifest(children: list[tuple[str, bytes, dict[str, str]]],
                   media_type: str | None = OCI_INDEX, child_type: str = OCI_MANIFEST,
                   **extra: Any) -> bytes:
    """children: (digest, bytes, platform)."""
    body: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        body["mediaType"] = media_type
    body["manifests"] = [
        {"mediaType": child_type, "digest": d, "size": len(raw), "platform": platform}
        for d, raw, platform in children
    ]
    body.update(extra)
    return json.dumps(body, indent=2).encode()
