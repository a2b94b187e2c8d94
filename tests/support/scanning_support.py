"""Helpers of the scanning tests: model artifacts pushed over plain HTTP, the config of a
server with scanning policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from tests.support.scanning_corpus import tar_of
from tests.support.trust_support import OCI_MANIFEST, TIMEOUT, push_manifest, sha256

MODEL_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
EMPTY = "application/vnd.oci.empty.v1+json"
REPORT_TYPE = "application/vnd.stablemirror.scan.report.v1+json"


def push_blob(base: str, repo: str, data: bytes) -> str:
    """POST then PUT: what every registry takes (docker-registry has no monolithic POST)."""
    digest = sha256(data)
    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    location = urljoin(f"{base}/", r.headers["Location"])
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=TIMEOUT,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


def model_manifest(base: str, repo: str, files: dict[str, bytes], modelpack: bool = False
                   ) -> bytes:
    """A plain OCI artifact (one raw layer per file, titled), or a ModelPack-style one
    (a tar layer per file, `org.cncf.model.filepath`)."""
    config = json.dumps({"descriptor": {"name": repo}}).encode() if modelpack else b"{}"
    layers = []
    for name, data in files.items():
        blob = tar_of({name: data}) if modelpack else data
        annotation = "org.cncf.model.filepath" if modelpack else "org.opencontainers.image.title"
        layers.append({"mediaType": WEIGHT_TAR if modelpack else "application/octet-stream",
                       "digest": push_blob(base, repo, blob), "size": len(blob),
                       "annotations": {annotation: name}})
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": MODEL_TYPE if modelpack else "application/vnd.example.model",
        "config": {"mediaType": MODEL_CONFIG if modelpack else EMPTY,
                   "digest": push_blob(base, repo, config), "size": len(config)},
        "layers": layers}
    return json.dumps(doc).encode()


def push_model(base: str, repo: str, tag: str, files: dict[str, bytes],
               modelpack: bool = False) -> str:
    return push_manifest(base, repo, tag, model_manifest(base, repo, files, modelpack))


def scanning_config(path: Path, policies: list[dict[str, Any]], **extra: Any) -> Path:
    # JSON is YAML: the settings loader reads it as the YAML config file.
    path.write_text(json.dumps({"scanning": {"policies": policies, **extra.pop("scanning", {})},
                                **extra}))
    return path


def referrers(base: str, repo: str, digest: str) -> list[dict[str, Any]]:
    r = requests.get(f"{base}/v2/{repo}/referrers/{digest}", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    manifests = r.json()["manifests"]
    assert isinstance(manifests, list)
    return manifests
