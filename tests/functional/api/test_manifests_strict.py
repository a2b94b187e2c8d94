"""PUT /v2/<name>/manifests/<reference> with hostile or subtly wrong bodies: each answers
400 MANIFEST_INVALID (never 500, never 201), stores nothing, and the server stays up."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.support.live import LiveServer
from tests.support.oci_http import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Api,
    assert_error,
    descriptor,
    digest_of,
    image_manifest,
    index_manifest,
    random_bytes,
)

REPO = "strict/m"
CONFIG = b'{"architecture": "amd64", "os": "linux"}'
LAYER = b"the layer bytes"


@pytest.fixture(scope="module")
def api(shared_server: LiveServer) -> Api:
    a = Api(shared_server)
    a.push_blob(REPO, CONFIG)
    a.push_blob(REPO, LAYER)
    return a


def doc(**extra: Any) -> dict[str, Any]:
    return json.loads(image_manifest(descriptor(CONFIG, OCI_CONFIG),
                                     [descriptor(LAYER, OCI_LAYER)], **extra))


def encode(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def with_layer(**fields: Any) -> bytes:
    d = doc()
    d["layers"][0].update(fields)
    return encode(d)


def deep(opener: bytes, closer: bytes) -> bytes:
    return (b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "x": '
            + opener * 100_000 + b"1" + closer * 100_000 + b"}")


def assert_refused(api: Api, body: bytes, tag: str = "bad") -> requests.Response:
    r = api.put_manifest(REPO, tag, body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_error(api.manifest(REPO, digest_of(body)), 404, "MANIFEST_UNKNOWN")
    assert_error(api.manifest(REPO, tag), 404, "MANIFEST_UNKNOWN")
    assert api.server.proc is not None and api.server.proc.poll() is None, "server died"
    return r


HOSTILE = {
    "utf-16": encode(doc()).decode().encode("utf-16"),
    "utf-16-le": encode(doc()).decode().encode("utf-16-le"),
    "utf-8-bom": b"\xef\xbb\xbf" + encode(doc()),
    "duplicate-key": encode(doc())[:-1] + b', "mediaType": "' + OCI_INDEX.encode() + b'"}',
    "size-over-int64": with_layer(size=2**63),
    "size-far-over-int64": with_layer(size=10**40),
    "size-negative": with_layer(size=-1),
    "annotation-int": encode(doc(annotations={"a": 1})),
    "annotation-null": encode(doc(annotations={"a": None})),
    "layer-annotation-list": with_layer(annotations={"a": ["x"]}),
    "config-annotations-string": encode({**doc(), "config": {
        **descriptor(CONFIG, OCI_CONFIG), "annotations": "k=v"}}),
    "lone-surrogate-artifact-type": encode(doc(artifactType="\ud800")),
    "lone-surrogate-config-type": encode({**doc(), "config": {
        **descriptor(CONFIG, OCI_CONFIG), "mediaType": "\udc00"}}),
    "nan": encode(doc(annotations={"a": "b"}))[:-1] + b', "x": NaN}',
    "deep-objects": deep(b'{"a": ', b"}"),
    "deep-arrays": deep(b"[", b"]"),
}


@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_bodies_are_manifest_invalid(api: Api, body: bytes) -> None:
    assert_refused(api, body)
    good = encode(doc(annotations={"after": random_bytes(4).hex()}))
    assert api.put_manifest(REPO, "good", good, OCI_MANIFEST).status_code == 201


def test_descriptor_sizes_must_match_stored_blobs(api: Api) -> None:
    for field in ("config", "layer"):
        for delta in (1, -1):
            d = doc()
            target = d["config"] if field == "config" else d["layers"][0]
            target["size"] += delta
            r = assert_refused(api, encode(d))
            assert digest_of(CONFIG if field == "config" else LAYER) in r.text
    # the same digest twice, once with the right size and once without
    d = doc()
    d["layers"].append({**d["layers"][0], "size": len(LAYER) + 5})
    assert_refused(api, encode(d))
    assert api.put_manifest(REPO, "sized", encode(doc()), OCI_MANIFEST).status_code == 201


def test_index_child_size_must_match_the_stored_manifest(api: Api) -> None:
    child = encode(doc(annotations={"child": "1"}))
    assert api.put_manifest(REPO, digest_of(child), child, OCI_MANIFEST).status_code == 201
    platform = {"architecture": "amd64", "os": "linux"}
    bad = json.loads(index_manifest([(digest_of(child), child, platform)]))
    bad["manifests"][0]["size"] += 1
    assert_refused(api, encode(bad))
    good = index_manifest([(digest_of(child), child, platform)])
    assert api.put_manifest(REPO, "multi", good, OCI_INDEX).status_code == 201


def subject_of(target: bytes, **override: Any) -> dict[str, Any]:
    return {"mediaType": OCI_MANIFEST, "digest": digest_of(target), "size": len(target),
            **override}


def test_subject_checks(api: Api) -> None:
    target = encode(doc(annotations={"subject": "yes"}))
    assert api.put_manifest(REPO, digest_of(target), target, OCI_MANIFEST).status_code == 201
    malformed = [
        subject_of(target, size=len(target) + 1),  # exists here: its size is known
        subject_of(target, mediaType="application/octet-stream"),  # not a manifest type
        subject_of(target, mediaType=OCI_LAYER),
        {"mediaType": OCI_MANIFEST, "size": 3},  # no digest
        {"digest": digest_of(target), "size": len(target)},  # no mediaType
        {"mediaType": OCI_MANIFEST, "digest": digest_of(target)},  # no size
        subject_of(target, digest="sha256:not-hex"),
        subject_of(target, size=-1),
        subject_of(target, annotations={"n": 1}),
        digest_of(target),  # not a descriptor at all
    ]
    for subject in malformed:
        body = encode(doc(artifactType="application/x.sig", subject=subject))
        r = assert_refused(api, body, "sig")
        assert "subject" in r.text
    # The spec: a subject that does not exist (yet) MUST be accepted; the size of one
    # that is not here cannot be checked, so any well-formed descriptor goes.
    ghost = digest_of(b"pushed later, or never")
    for size in (22, 1):
        body = encode(doc(artifactType="application/x.sig",
                          subject={"mediaType": OCI_MANIFEST, "digest": ghost, "size": size}))
        r = api.put_manifest(REPO, digest_of(body), body, OCI_MANIFEST)
        assert r.status_code == 201, r.text
        assert r.headers["OCI-Subject"] == ghost
    body = encode(doc(artifactType="application/x.sig", subject=subject_of(target)))
    r = api.put_manifest(REPO, "sig", body, OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == digest_of(target)
