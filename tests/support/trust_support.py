"""Helpers of the integrity and trust tests (test_trust*.py, test_scrub*.py): the CLI as a
real process, images pushed over plain HTTP, key pairs, byte flips on disk."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.live import LiveServer

PASSWORD = "correct horse battery staple"
KEY_ENV = {"STABLEMIRROR_KEY_PASSWORD": PASSWORD}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX,
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])
TIMEOUT = 60


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`stablemirror ARGS...` as a real process; stdin closed (no prompts)."""
    proc = subprocess.run([sys.executable, "-m", "stablemirror", *args],
                          env={**os.environ, "COLUMNS": "200", **KEY_ENV, **(env or {})},
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"stablemirror {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def generate_keys(directory: Path, *names: str) -> dict[str, Path]:
    """name -> PREFIX (PREFIX.key and PREFIX.pub exist)."""
    found = {}
    for name in names:
        prefix = directory / name
        cli("key", "generate", "--out", str(prefix))
        assert prefix.with_suffix(".key").is_file() and prefix.with_suffix(".pub").is_file()
        found[name] = prefix
    return found


@dataclass
class Image:
    repository: str
    tag: str
    digest: str
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes

    @property
    def layer(self) -> str:
        return list(self.blobs)[-1]


def push_blob(base: str, repo: str, data: bytes) -> str:
    d = sha256(data)
    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/?digest={d}", data=data, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return d


def push_manifest(base: str, repo: str, ref: str, body: bytes,
                  media_type: str = OCI_MANIFEST) -> str:
    r = requests.put(f"{base}/v2/{repo}/manifests/{ref}", data=body,
                     headers={"Content-Type": media_type}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return str(r.headers["Docker-Content-Digest"])


def push_image(base: str, repo: str, tag: str = "v1", layer_size: int = 256 * 1024,
               layers: int = 1, arch: str = "amd64") -> Image:
    config = json.dumps({"architecture": arch, "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    blobs = {push_blob(base, repo, config): config}
    layer_descs = []
    for _ in range(layers):
        data = os.urandom(layer_size)
        d = push_blob(base, repo, data)
        blobs[d] = data
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": d, "size": len(data)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": layer_descs}).encode()
    digest = push_manifest(base, repo, tag, manifest)
    assert digest == sha256(manifest)
    return Image(repo, tag, digest, manifest, blobs)


def get_manifest(base: str, repo: str, ref: str, method: str = "GET") -> requests.Response:
    return requests.request(method, f"{base}/v2/{repo}/manifests/{ref}",
                            headers={"Accept": ACCEPT}, timeout=TIMEOUT)


def error(r: requests.Response) -> dict[str, object]:
    doc = r.json()
    assert isinstance(doc, dict)
    first = doc["errors"][0]
    assert isinstance(first, dict)
    return first


def blob_path(data_dir: Path, digest: str) -> Path:
    algorithm, hexd = digest.split(":", 1)
    return data_dir / "blobs" / algorithm / hexd[:2] / hexd


def flip_byte(data_dir: Path, digest: str, offset: int = 1000) -> None:
    path = blob_path(data_dir, digest)
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def ref(server: LiveServer, image: Image, by_digest: bool = False) -> str:
    sep = f"@{image.digest}" if by_digest else f":{image.tag}"
    return f"{server.host}/{image.repository}{sep}"


def metric(base: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, from /metrics."""
    total = 0.0
    for line in requests.get(f"{base}/metrics", timeout=TIMEOUT).text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total
