"""Helpers for the replication tests: images with a multi-chunk layer, a cosign-style
`.sig` tag and a referrer, pushed over plain HTTP to any registry; byte checks."""

from __future__ import annotations

import json
import os

import requests

from tests.support.mirror_support import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    make_image,
    push_blob,
    push_image,
    sha256,
)

TIMEOUT = 60
EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


def put_manifest(base: str, repo: str, ref: str, body: bytes, media_type: str) -> None:
    r = requests.put(f"{base}/v2/{repo}/manifests/{ref}", data=body,
                     headers={"Content-Type": media_type}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)


def push_index(base: str, repo: str, tag: str, images: list[Image]) -> tuple[bytes, str]:
    for i, img in enumerate(images):
        push_image(base, img, repo=repo, tag=None)
        assert img.digest, i
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": img.media_type, "digest": img.digest, "size": len(img.manifest),
         "platform": {"os": "linux", "architecture": arch}}
        for img, arch in zip(images, ("amd64", "arm64"), strict=False)]}).encode()
    put_manifest(base, repo, tag, body, OCI_INDEX)
    return body, sha256(body)


def push_sig_tag(base: str, repo: str, subject: str) -> tuple[bytes, str]:
    """A manifest at cosign's `sha256-<hex>.sig` tag (content need not be a real signature:
    the copier moves it by tag, as it moves cosign's)."""
    payload = json.dumps({"critical": {"image": {"docker-manifest-digest": subject}}}).encode()
    push_blob(base, repo, payload)
    push_blob(base, repo, EMPTY)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": EMPTY_TYPE, "digest": sha256(EMPTY), "size": 2},
                       "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1"
                                   "+json", "digest": sha256(payload),
                                   "size": len(payload)}]}).encode()
    put_manifest(base, repo, f"sha256-{subject.split(':')[1]}.sig", body, OCI_MANIFEST)
    return body, sha256(body)


def push_referrer(base: str, repo: str, subject: Image) -> str:
    """An SBOM-like artifact whose subject is `subject` (pushed by digest)."""
    sbom = os.urandom(512)
    push_blob(base, repo, sbom)
    push_blob(base, repo, EMPTY)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "artifactType": "application/spdx+json",
                       "config": {"mediaType": EMPTY_TYPE, "digest": sha256(EMPTY), "size": 2},
                       "layers": [{"mediaType": "application/spdx+json",
                                   "digest": sha256(sbom), "size": len(sbom)}],
                       "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                                   "size": len(subject.manifest)}}).encode()
    put_manifest(base, repo, sha256(body), body, OCI_MANIFEST)
    return sha256(body)


def manifest_bytes(base: str, repo: str, ref: str) -> bytes | None:
    r = requests.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT},
                     timeout=TIMEOUT)
    return r.content if r.status_code == 200 else None


def blob_bytes(base: str, repo: str, digest: str) -> bytes:
    r = requests.get(f"{base}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.content


def assert_image_at(base: str, repo: str, ref: str, image: Image) -> None:
    assert manifest_bytes(base, repo, ref) == image.manifest
    for digest, data in image.blobs.items():
        assert blob_bytes(base, repo, digest) == data, digest


__all__ = ["make_image", "push_image", "sha256"]
