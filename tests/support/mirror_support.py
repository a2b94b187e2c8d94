"""Helpers for the mirror tests (tests/functional/test_mirror*.py).

* Pushing content with plain HTTP to any registry (stablemirror or Debian's
  docker-registry): POST + PUT uploads, which both implement; a streamed upload for blobs too
  big to hold in memory.
* Pulling with plain HTTP and checking every byte against what was pushed.
* Mirror configuration files (JSON, which is YAML) and LiveServer start-up with them.
* Registries started outside pytest's function-scoped `server_factory`, for module fixtures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin

import requests

from tests.support.clients import BuiltImage, OciLayout, ReferenceRegistry
from tests.support.live import LiveServer

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
TIMEOUT = 60


class Registry(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def host(self) -> str: ...

    def log(self) -> str: ...


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- pushing -----------------------------------------------------------------------------------
def push_blob(base: str, repo: str, data: bytes) -> str:
    """POST a session, PUT the bytes with ?digest= (both registries accept this)."""
    digest = sha256(data)
    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, (r.status_code, r.text)
    location = urljoin(base + "/", r.headers["Location"])
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=TIMEOUT,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def push_random_blob_streamed(base: str, repo: str, size: int, chunk: int = 4 * MiB) -> str:
    """Upload `size` random bytes as one chunked PATCH, never holding them in memory."""
    h = hashlib.sha256()

    def body() -> Iterator[bytes]:
        left = size
        while left:
            data = os.urandom(min(chunk, left))
            h.update(data)
            left -= len(data)
            yield data

    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, (r.status_code, r.text)
    location = urljoin(base + "/", r.headers["Location"])
    r = requests.patch(location, data=body(), timeout=600,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, (r.status_code, r.text)
    digest = "sha256:" + h.hexdigest()
    location = urljoin(base + "/", r.headers["Location"])
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{location}{sep}digest={digest}", timeout=600)
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


@dataclass
class Image:
    repo: str
    tag: str | None
    manifest: bytes
    digest: str
    media_type: str
    blobs: dict[str, bytes] = field(default_factory=dict)  # config + layers

    @property
    def layers(self) -> list[str]:
        return [d["digest"] for d in json.loads(self.manifest)["layers"]]

    @property
    def size(self) -> int:
        return len(self.manifest) + sum(len(b) for b in self.blobs.values())


def make_image(repo: str, tag: str | None, layer_sizes: tuple[int, ...] = (64 * 1024,),
               media_type: str = OCI_MANIFEST, layers: list[bytes] | None = None) -> Image:
    """Random content (uncompressed tar media type, random bytes: clients never unpack)."""
    docker = media_type == DOCKER_MANIFEST
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": os.urandom(8).hex()}).encode()
    layer_data = layers if layers is not None else [os.urandom(n) for n in layer_sizes]
    cfg_type = "application/vnd.docker.container.image.v1+json" if docker else OCI_CONFIG
    layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else OCI_LAYER
    body = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": cfg_type, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": sha256(d), "size": len(d)}
                   for d in layer_data],
    }
    manifest = json.dumps(body, indent=2).encode()
    blobs = {sha256(config): config, **{sha256(d): d for d in layer_data}}
    return Image(repo, tag, manifest, sha256(manifest), media_type, blobs)


def push_image(base: str, image: Image, repo: str | None = None, tag: str | None = None
               ) -> Image:
    """Push `image` (blobs, then the manifest under its tag, or by digest)."""
    repo = repo or image.repo
    for data in image.blobs.values():
        push_blob(base, repo, data)
    ref = tag or image.tag or image.digest
    r = requests.put(f"{base}/v2/{repo}/manifests/{ref}", data=image.manifest,
                     headers={"Content-Type": image.media_type}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers.get("Docker-Content-Digest") == image.digest, r.headers
    return image


def push_new_image(base: str, repo: str, tag: str | None = "latest",
                   layer_sizes: tuple[int, ...] = (64 * 1024,),
                   media_type: str = OCI_MANIFEST) -> Image:
    return push_image(base, make_image(repo, tag, layer_sizes, media_type))


# -- pulling -----------------------------------------------------------------------------------
def get_manifest(base: str, repo: str, ref: str, method: str = "GET",
                 params: dict[str, str] | None = None, timeout: float = TIMEOUT
                 ) -> requests.Response:
    return requests.request(method, f"{base}/v2/{repo}/manifests/{ref}", params=params,
                            headers={"Accept": MANIFEST_ACCEPT}, timeout=timeout)


def get_blob(base: str, repo: str, digest: str, params: dict[str, str] | None = None,
             timeout: float = TIMEOUT, headers: dict[str, str] | None = None
             ) -> requests.Response:
    return requests.get(f"{base}/v2/{repo}/blobs/{digest}", params=params, timeout=timeout,
                        headers=headers)


def assert_manifest(r: requests.Response, image: Image, log: Callable[[], str]) -> None:
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{log()[-4000:]}"
    assert r.content == image.manifest, "manifest bytes differ"
    assert sha256(r.content) == image.digest
    assert r.headers.get("Docker-Content-Digest") == image.digest, r.headers


def assert_blob(r: requests.Response, digest: str, data: bytes,
                log: Callable[[], str]) -> None:
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{log()[-4000:]}"
    assert sha256(r.content) == digest, (
        f"blob {digest}: got {len(r.content)} bytes hashing to {sha256(r.content)}")
    assert r.content == data


def pull_image(base: str, image: Image, ref: str | None = None, repo: str | None = None,
               log: Callable[[], str] = lambda: "",
               params: dict[str, str] | None = None) -> requests.Response:
    """Manifest (by tag, or `ref`) and every blob, all byte-identical; returns the manifest
    response (for its headers)."""
    repo = repo or image.repo
    r = get_manifest(base, repo, ref or image.tag or image.digest, params=params)
    assert_manifest(r, image, log)
    for digest, data in image.blobs.items():
        assert_blob(get_blob(base, repo, digest, params=params), digest, data, log)
    return r


def error_codes(r: requests.Response) -> list[str]:
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("errors"), list), r.text
    return [e["code"] for e in doc["errors"]]


# -- the data directory ---------------------------------------------------------------------
def blob_files(data_dir: Path) -> dict[str, Path]:
    root = data_dir / "blobs"
    if not root.exists():
        return {}
    return {f"{p.parent.parent.name}:{p.name}": p for p in root.rglob("*") if p.is_file()}


def published_blobs(data_dir: Path, digests: Iterable[str], timeout: float = 30
                    ) -> dict[str, Path]:
    """blob_files once all `digests` are there. A mirror ends a response as soon as the digest
    matched; fsync and publish into blobs/ follow a moment later."""
    wanted = set(digests)
    deadline = time.monotonic() + timeout
    while not wanted <= (found := blob_files(data_dir)).keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def assert_blob_files_intact(data_dir: Path) -> int:
    """Every file under blobs/ hashes to its own name; returns how many there are."""
    n = 0
    for digest, p in blob_files(data_dir).items():
        algorithm, hex_ = digest.split(":", 1)
        h = hashlib.new(algorithm)
        with p.open("rb") as f:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        assert h.hexdigest() == hex_, f"corrupt blob file {p}"
        n += 1
    return n


# -- configuration and processes -------------------------------------------------------------
def upstream(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, **kw}


def group(*upstreams: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """An upstream group; test-friendly defaults: no active checks, short timeouts."""
    settings: dict[str, Any] = {"health_check_interval": 0, "connect_timeout": 2,
                                "first_byte_timeout": 5, "read_timeout": 5}
    settings.update(kw)
    return {"upstreams": list(upstreams), **settings}


def namespace(prefix: str = "", mode: str = "proxy", upstream_group: str = "main",
              **kw: Any) -> dict[str, Any]:
    return {"prefix": prefix, "mode": mode, "upstream_group": upstream_group, **kw}


def write_config(path: Path, groups: dict[str, dict[str, Any]],
                 namespaces: list[dict[str, Any]], node_id: str | None = None,
                 **extra: Any) -> Path:
    mirror: dict[str, Any] = {"upstream_groups": groups, "namespaces": namespaces}
    if node_id:
        mirror["node_id"] = node_id
    # JSON is YAML: the settings loader reads it as the YAML config file.
    path.write_text(json.dumps({"mirror": mirror, **extra}, indent=2))
    return path


@contextlib.contextmanager
def running_server(data_dir: Path, *args: str, workers: int = 1) -> Iterator[LiveServer]:
    data_dir.mkdir(parents=True, exist_ok=True)
    s = LiveServer(data_dir, *args, workers=workers)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@contextlib.contextmanager
def running_reference(data_dir: Path) -> Iterator[ReferenceRegistry]:
    r = ReferenceRegistry(data_dir)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def logs(*registries: Any) -> Callable[[], str]:
    """A callable giving the log tails of several processes, for assertion messages."""
    def read() -> str:
        parts = []
        for reg in registries:
            try:
                text = reg.log()[-3000:]
            except OSError as e:
                text = f"<log unavailable: {e}>"
            parts.append(f"--- {getattr(reg, 'url', reg)} ---\n{text}")
        return "\n".join(parts)
    return read


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- real images (for podman, which unpacks layers) ------------------------------------------
def layout_image(root: Path, repo: str, tag: str | None,
                 layer_sizes: tuple[int, ...] = (96 * 1024,),
                 compresslevel: int = 1) -> tuple[Image, BuiltImage]:
    """An image podman can unpack (gzip tar layers, real config), as an `Image` to push.
    compresslevel 0 is still gzip (stored blocks), and quick to make."""
    layout = OciLayout(root)
    built = layout.add_image(list(layer_sizes), compresslevel=compresslevel)
    blobs = {d.digest: layout.blob_path(d.digest).read_bytes() for d in built.blobs}
    return (Image(repo, tag, built.manifest_bytes, built.manifest.digest,
                  built.manifest.media_type, blobs), built)
