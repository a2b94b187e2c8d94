"""Manifest parsing: media types, references, subjects, artifact types, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestInvalid, ManifestTooLarge
from stablemirror.oci.manifest import (
    MAX_MANIFEST_BYTES,
    parse_manifest,
    resolve_media_type,
)

CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER1 = b"layer one"
LAYER2 = b"layer two"
MODEL = "application/vnd.cncf.model.manifest.v1+json"


def desc(data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data), **extra}


def image(media_type: str | None = mt.OCI_MANIFEST, **extra: Any) -> dict[str, Any]:
    docker = media_type == mt.DOCKER_MANIFEST
    body: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        body["mediaType"] = media_type
    body["config"] = desc(
        CONFIG,
        "application/vnd.docker.container.image.v1+json"
        if docker
        else "application/vnd.oci.image.config.v1+json",
    )
    layer_type = (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        if docker
        else "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    body["layers"] = [desc(LAYER1, layer_type), desc(LAYER2, layer_type)]
    body.update(extra)
    return body


def index(media_type: str | None = mt.OCI_INDEX, **extra: Any) -> dict[str, Any]:
    child_type = mt.DOCKER_MANIFEST if media_type == mt.DOCKER_LIST else mt.OCI_MANIFEST
    a = json.dumps(image(child_type)).encode()
    b = json.dumps(image(child_type, annotations={"x": "y"})).encode()
    body: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        body["mediaType"] = media_type
    body["manifests"] = [
        desc(a, child_type, platform={"architecture": "amd64", "os": "linux"}),
        desc(b, child_type, platform={"architecture": "arm64", "os": "linux"}),
    ]
    body.update(extra)
    return body


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# -- the four manifest kinds -------------------------------------------------------------
@pytest.mark.parametrize("media_type", [mt.OCI_MANIFEST, mt.DOCKER_MANIFEST])
def test_image_manifest(media_type: str) -> None:
    body = image(media_type)
    data = raw(body)
    m = parse_manifest(data, media_type)
    assert m.media_type == media_type
    assert m.raw == data
    assert m.digest == Digest.of(data)
    assert not m.is_index
    assert m.children == ()
    assert [str(d.digest) for d in m.blobs] == [
        body["config"]["digest"],
        body["layers"][0]["digest"],
        body["layers"][1]["digest"],
    ]
    assert [d.size for d in m.blobs] == [len(CONFIG), len(LAYER1), len(LAYER2)]
    assert m.blobs[0].media_type == body["config"]["mediaType"]
    assert m.config_media_type == body["config"]["mediaType"]
    assert m.subject is None


@pytest.mark.parametrize("media_type", [mt.OCI_INDEX, mt.DOCKER_LIST])
def test_index_manifest(media_type: str) -> None:
    body = index(media_type)
    data = raw(body)
    m = parse_manifest(data, media_type)
    assert m.media_type == media_type
    assert m.is_index
    assert m.blobs == ()
    assert [str(c.digest) for c in m.children] == [e["digest"] for e in body["manifests"]]
    assert m.children[1].platform == {"architecture": "arm64", "os": "linux"}
    assert m.config_media_type is None


def test_empty_index_is_valid() -> None:
    m = parse_manifest(raw({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}), "")
    assert m.is_index and m.children == ()


def test_raw_bytes_and_digest_are_exactly_what_was_sent() -> None:
    pretty = json.dumps(image(), indent=7, sort_keys=False).encode() + b"\n\n  \t"
    m = parse_manifest(pretty, mt.OCI_MANIFEST)
    assert m.raw == pretty
    assert m.digest == Digest.of(pretty)
    assert m.digest != Digest.of(raw(image()))


def test_sha512_digest_of_manifest() -> None:
    data = raw(image())
    m = parse_manifest(data, mt.OCI_MANIFEST, "sha512")
    assert m.digest == Digest.of(data, "sha512")
    assert len(m.digest.hex) == 128


# -- media type resolution ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (image(None), mt.OCI_MANIFEST, mt.OCI_MANIFEST),
        (image(None), mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST),
        (index(None), mt.OCI_INDEX, mt.OCI_INDEX),
        (index(None), mt.DOCKER_LIST, mt.DOCKER_LIST),
        # podman: no mediaType in the body, the type (with parameters) in Content-Type
        (image(None), mt.OCI_MANIFEST + "; charset=utf-8", mt.OCI_MANIFEST),
        (image(None), f"  {mt.OCI_MANIFEST} ", mt.OCI_MANIFEST),
        # nothing declared anywhere: shape decides, as the image spec allows for OCI types
        (image(None), "", mt.OCI_MANIFEST),
        (image(None), "application/json", mt.OCI_MANIFEST),
        (index(None), "application/octet-stream", mt.OCI_INDEX),
        # declared in the body, generic or matching Content-Type
        (image(mt.DOCKER_MANIFEST), "", mt.DOCKER_MANIFEST),
        (image(mt.DOCKER_MANIFEST), "application/json", mt.DOCKER_MANIFEST),
        (image(mt.OCI_MANIFEST), mt.OCI_MANIFEST, mt.OCI_MANIFEST),
        (index(mt.DOCKER_LIST), mt.DOCKER_LIST + ";charset=utf-8", mt.DOCKER_LIST),
    ],
)
def test_media_type_resolution(body: dict[str, Any], content_type: str, expected: str) -> None:
    assert resolve_media_type(body, content_type) == expected
    m = parse_manifest(raw(body), content_type)
    assert m.media_type == expected
    assert m.is_index == (expected in mt.INDEXES)


def test_podman_style_body_parses_with_content_type_only() -> None:
    # podman / containers-image pushes OCI manifests without `mediaType`.
    body = {
        "schemaVersion": 2,
        "config": desc(CONFIG, "application/vnd.oci.image.config.v1+json"),
        "layers": [desc(LAYER1, "application/vnd.oci.image.layer.v1.tar+gzip")],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    data = json.dumps(body, indent=4).encode()
    m = parse_manifest(data, mt.OCI_MANIFEST)
    assert m.media_type == mt.OCI_MANIFEST
    assert m.annotations == body["annotations"]
    assert len(m.blobs) == 2


def test_declared_type_conflicting_with_content_type_is_rejected() -> None:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(raw(image(mt.OCI_MANIFEST)), mt.DOCKER_MANIFEST)
    assert info.value.detail["field"] == "mediaType"


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.oci.image.config.v1+json",
        "text/plain",
    ],
)
def test_unsupported_declared_types(media_type: str) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(image(media_type)), "")


def test_unsupported_content_type_without_declared_type_falls_back_to_shape() -> None:
    assert parse_manifest(raw(image(None)), "text/plain").media_type == mt.OCI_MANIFEST


def test_media_type_must_be_a_string() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(image(None, mediaType=7)), mt.OCI_MANIFEST)


def test_undeterminable_media_type() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw({"schemaVersion": 2}), "")


def test_content_type_index_but_body_is_image() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(image(None)), mt.OCI_INDEX)


def test_content_type_image_but_body_is_index() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(index(None)), mt.OCI_MANIFEST)


# -- subject and artifact types ------------------------------------------------------------
def test_subject_is_parsed() -> None:
    target = raw(image())
    body = image(subject=desc(target, mt.OCI_MANIFEST), artifactType="application/x.sig")
    m = parse_manifest(raw(body), "")
    assert m.subject is not None
    assert m.subject.digest == Digest.of(target)
    assert m.subject.size == len(target)
    assert m.subject.media_type == mt.OCI_MANIFEST


def test_null_subject_is_no_subject() -> None:
    assert parse_manifest(raw(image(subject=None)), "").subject is None


def test_index_subject_and_artifact_type() -> None:
    target = raw(image())
    m = parse_manifest(
        raw(index(subject=desc(target, mt.OCI_MANIFEST), artifactType="application/x.bundle")),
        "",
    )
    assert m.subject is not None and m.subject.digest == Digest.of(target)
    assert m.artifact_type == "application/x.bundle"
    assert m.effective_artifact_type == "application/x.bundle"


def test_effective_artifact_type_prefers_artifact_type() -> None:
    body = image(artifactType=MODEL)
    body["config"] = desc(b"{}", mt.OCI_EMPTY)
    m = parse_manifest(raw(body), "")
    assert m.artifact_type == MODEL
    assert m.effective_artifact_type == MODEL


def test_effective_artifact_type_falls_back_to_config_media_type() -> None:
    body = image()
    body["config"] = desc(b"{}", "application/vnd.cncf.model.config.v1+json")
    m = parse_manifest(raw(body), "")
    assert m.artifact_type is None
    assert m.effective_artifact_type == "application/vnd.cncf.model.config.v1+json"


def test_effective_artifact_type_of_plain_image_is_its_config_type() -> None:
    m = parse_manifest(raw(image()), "")
    assert m.effective_artifact_type == "application/vnd.oci.image.config.v1+json"


def test_effective_artifact_type_with_empty_config_and_no_artifact_type() -> None:
    # The image spec: when artifactType is absent, the config media type is reported.
    body = image()
    body["config"] = desc(b"{}", mt.OCI_EMPTY)
    assert parse_manifest(raw(body), "").effective_artifact_type == mt.OCI_EMPTY


def test_index_without_artifact_type_has_none() -> None:
    assert parse_manifest(raw(index()), "").effective_artifact_type is None


def test_artifact_type_must_be_a_string() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(image(artifactType=["x"])), "")


def test_annotations_kept_and_validated() -> None:
    m = parse_manifest(raw(image(annotations={"a": "1", "b": "2"})), "")
    assert m.annotations == {"a": "1", "b": "2"}
    assert parse_manifest(raw(image()), "").annotations == {}
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(image(annotations=["a"])), "")


def test_descriptor_artifact_type_and_annotations() -> None:
    body = index()
    body["manifests"][0]["artifactType"] = "application/x.t"
    body["manifests"][0]["annotations"] = {"k": "v"}
    m = parse_manifest(raw(body), "")
    assert m.children[0].artifact_type == "application/x.t"
    assert m.children[0].annotations == {"k": "v"}
    assert m.children[1].artifact_type is None


# -- foreign layers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "foreign_type",
    [
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ],
)
def test_foreign_layers_are_not_required_blobs(foreign_type: str) -> None:
    body = image()
    foreign = desc(b"windows base layer", foreign_type, urls=["https://example.com/layer"])
    body["layers"].insert(0, foreign)
    m = parse_manifest(raw(body), "")
    wanted = {str(d.digest) for d in m.blobs}
    assert foreign["digest"] not in wanted
    assert wanted == {
        body["config"]["digest"],
        body["layers"][1]["digest"],
        body["layers"][2]["digest"],
    }


# -- limits and malformed input ---------------------------------------------------------------
def test_manifest_at_the_limit_is_accepted() -> None:
    body = image(annotations={"pad": ""})
    base = len(raw(body))
    body["annotations"]["pad"] = "x" * (MAX_MANIFEST_BYTES - base)
    data = raw(body)
    assert len(data) == MAX_MANIFEST_BYTES
    assert parse_manifest(data, "").raw == data


def test_oversized_manifest() -> None:
    assert MAX_MANIFEST_BYTES == 4 * 1024 * 1024
    body = image(annotations={"pad": "x" * MAX_MANIFEST_BYTES})
    with pytest.raises(ManifestTooLarge) as info:
        parse_manifest(raw(body), "")
    assert info.value.status == 413
    assert info.value.code == "MANIFEST_INVALID"
    assert isinstance(info.value, ManifestInvalid)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"not json",
        b'{"schemaVersion": 2,}',
        b"\xff\xfe\x00garbage",
        b'{"schemaVersion": 2, "config": ',
    ],
)
def test_invalid_json(data: bytes) -> None:
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(data, mt.OCI_MANIFEST)
    assert info.value.code == "MANIFEST_INVALID"
    assert info.value.status == 400


@pytest.mark.parametrize("data", [b"[]", b"2", b'"manifest"', b"null", b"true"])
def test_json_that_is_not_an_object(data: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(data, mt.OCI_MANIFEST)


@pytest.mark.parametrize("version", [None, 1, 3, "2", 0, True])
def test_schema_version_must_be_two(version: Any) -> None:
    body = image()
    if version is None:
        del body["schemaVersion"]
    else:
        body["schemaVersion"] = version
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(raw(body), "")
    assert info.value.detail.get("field") == "schemaVersion"


def test_docker_schema1_is_rejected() -> None:
    body = {
        "schemaVersion": 1,
        "name": "x",
        "tag": "latest",
        "fsLayers": [{"blobSum": str(Digest.of(b"x"))}],
    }
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(body), "application/vnd.docker.distribution.manifest.v1+prettyjws")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("config"),
        lambda b: b.update(config="sha256:abc"),
        lambda b: b.pop("layers"),
        lambda b: b.update(layers={"a": 1}),
        lambda b: b["layers"].append("not a descriptor"),
        lambda b: b["config"].pop("mediaType"),
        lambda b: b["config"].update(mediaType=""),
        lambda b: b["config"].pop("digest"),
        lambda b: b["config"].update(digest="sha256:short"),
        lambda b: b["config"].update(digest="md5:" + "0" * 32),
        lambda b: b["config"].update(digest=123),
        lambda b: b["layers"][0].pop("size"),
        lambda b: b["layers"][0].update(size=-1),
        lambda b: b["layers"][0].update(size="10"),
        lambda b: b["layers"][0].update(size=1.5),
        lambda b: b["layers"][0].update(size=True),
        lambda b: b.update(subject="sha256:abc"),
        lambda b: b.update(subject={"mediaType": mt.OCI_MANIFEST}),
    ],
)
def test_malformed_image_manifests(mutate: Any) -> None:
    body = image()
    mutate(body)
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(body), mt.OCI_MANIFEST)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("manifests"),
        lambda b: b.update(manifests={}),
        lambda b: b.update(manifests=[None]),
        lambda b: b["manifests"][0].update(digest="sha256:nope"),
        lambda b: b["manifests"][1].pop("size"),
    ],
)
def test_malformed_indexes(mutate: Any) -> None:
    body = index()
    mutate(body)
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw(body), mt.OCI_INDEX)


def test_error_detail_names_the_field() -> None:
    body = image()
    body["layers"][1]["size"] = -5
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(raw(body), "")
    assert info.value.detail["field"] == "layers[1].size"


def test_sha512_referenced_blobs() -> None:
    body = image()
    body["layers"][0]["digest"] = str(Digest.of(LAYER1, "sha512"))
    m = parse_manifest(raw(body), "")
    assert m.blobs[1].digest == Digest.of(LAYER1, "sha512")
