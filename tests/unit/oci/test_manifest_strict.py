"""Manifest strictness: what the Go parsers of clients would refuse, what the index cannot
hold, and descriptors that are not what the image spec says (sizes, annotations, subject)."""

from __future__ import annotations

from typing import Any

import pytest

from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestInvalid
from stablemirror.oci.manifest import MAX_JSON_DEPTH, parse_manifest
from tests.unit.oci.test_manifest import desc, image, index, raw


@pytest.mark.parametrize(
    "data",
    [
        raw(image()).decode().encode("utf-16"),
        raw(image()).decode().encode("utf-16-le"),
        b"\xef\xbb\xbf" + raw(image()),
        raw(image())[:-1] + b', "schemaVersion": 2}',  # duplicate key
        raw(image(artifactType="\ud800")),  # lone surrogate (json.dumps escapes it)
        raw(image(annotations={"a": float("nan")})),
        b'{"schemaVersion": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"schemaVersion": 2, "x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    ],
    ids=["utf16", "utf16le", "bom", "dupkey", "surrogate", "nan", "deep-array", "deep-object"],
)
def test_strict_json_is_required(data: bytes) -> None:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(data, mt.OCI_MANIFEST)
    assert info.value.status == 400


def test_nesting_up_to_the_limit_is_accepted() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH - 2):  # manifest object + "x" object + this many arrays
        deep = [deep]
    parse_manifest(raw(image(x={"y": deep})), "")
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(image(x={"y": [deep]})), "")


@pytest.mark.parametrize("size", [2**63, 2**64, 10**30, -1, -(2**63)])
def test_descriptor_size_must_fit_int64(size: int) -> None:
    body = image()
    body["layers"][0]["size"] = size
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(raw(body), "")
    assert info.value.detail["field"] == "layers[0].size"


def test_largest_int64_size_is_accepted() -> None:
    body = image()
    body["layers"][0]["size"] = 2**63 - 1
    assert parse_manifest(raw(body), "").blobs[1].size == 2**63 - 1


@pytest.mark.parametrize("value", [1, 1.5, True, None, ["v"], {"k": "v"}])
@pytest.mark.parametrize("where", ["manifest", "config", "layer", "subject", "index", "child"])
def test_annotations_are_string_to_string(where: str, value: Any) -> None:
    bad = {"ok": "fine", "bad": value}
    target = desc(raw(image()), mt.OCI_MANIFEST)
    body = index() if where in ("index", "child") else image(subject=target)
    holder = {
        "manifest": body, "index": body, "config": body.get("config"),
        "layer": body.get("layers", [None])[0], "subject": body.get("subject"),
        "child": body.get("manifests", [None])[0],
    }[where]
    holder["annotations"] = bad
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(raw(body), "")
    assert "annotations" in info.value.detail["field"]


@pytest.mark.parametrize(
    "subject",
    [
        {"digest": str(Digest.of(b"s")), "size": 1},
        {"mediaType": mt.OCI_MANIFEST, "size": 1},
        {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"s"))},
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:nothex", "size": 1},
        {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"s")), "size": -1},
        {"mediaType": "application/octet-stream", "digest": str(Digest.of(b"s")), "size": 1},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(Digest.of(b"s")),
         "size": 1},
        [],
        "sha256:" + "0" * 64,
    ],
)
def test_malformed_subject(subject: Any) -> None:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(raw(image(subject=subject)), "")
    assert str(info.value.detail["field"]).startswith("subject")


@pytest.mark.parametrize("media_type", sorted(mt.MANIFESTS))
def test_subject_of_every_manifest_type(media_type: str) -> None:
    m = parse_manifest(raw(image(subject=desc(b"whatever", media_type))), "")
    assert m.subject is not None and m.subject.media_type == media_type


@pytest.mark.parametrize("text", ["a\x00b", "application/x\n", "\x7fapplication/x", "a\tb"])
@pytest.mark.parametrize("where", ["artifactType", "config.mediaType", "layer.artifactType"])
def test_stored_type_strings_hold_no_control_characters(where: str, text: str) -> None:
    # These go into index columns (PostgreSQL text cannot hold a NUL) and out in responses.
    body = image()
    if where == "artifactType":
        body["artifactType"] = text
    elif where == "config.mediaType":
        body["config"]["mediaType"] = text
    else:
        body["layers"][0]["artifactType"] = text
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(body), "")
