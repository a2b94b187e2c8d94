"""PUT / GET / HEAD / DELETE /v2/<name>/manifests/<reference> for every manifest kind."""

from __future__ import annotations

import json

import pytest

from tests.support.live import LiveServer
from tests.support.oci_http import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Api,
    assert_error,
    blob_files,
    descriptor,
    digest_of,
    image_manifest,
    index_manifest,
    random_bytes,
)

AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux"}


def build(api: Api, repo: str, media_type: str, declare_type: bool = True
          ) -> tuple[bytes, str]:
    """Push what a manifest of `media_type` needs; return its bytes and Content-Type."""
    if media_type in (OCI_MANIFEST, DOCKER_MANIFEST):
        config = json.dumps({"os": "linux", "n": random_bytes(4).hex()}).encode()
        layer = random_bytes(2048)
        api.push_blob(repo, config)
        api.push_blob(repo, layer)
        docker = media_type == DOCKER_MANIFEST
        body = image_manifest(descriptor(config, DOCKER_CONFIG if docker else OCI_CONFIG),
                              [descriptor(layer, DOCKER_LAYER if docker else OCI_LAYER)],
                              media_type if declare_type else None)
        return body, media_type
    child_type = DOCKER_MANIFEST if media_type == DOCKER_LIST else OCI_MANIFEST
    children = []
    for platform in (AMD64, ARM64):
        d, raw = api.push_image(repo, media_type=child_type)
        children.append((d, raw, platform))
    body = index_manifest(children, media_type if declare_type else None, child_type)
    return body, media_type


ALL_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]


@pytest.mark.parametrize("media_type", ALL_TYPES)
def test_put_get_head_delete_by_tag_and_digest(shared_server: LiveServer, media_type: str
                                               ) -> None:
    api = Api(shared_server)
    repo = "man/" + media_type.rsplit(".", 2)[-2].replace("+", "-")
    body, content_type = build(api, repo, media_type)
    d = digest_of(body)

    r = api.put_manifest(repo, "v1", body, content_type)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{d}")
    assert "OCI-Subject" not in r.headers

    for reference in ("v1", d):
        got = api.manifest(repo, reference)
        assert got.status_code == 200, got.text
        assert got.content == body
        assert got.headers["Content-Type"] == media_type
        assert got.headers["Docker-Content-Digest"] == d
        head = api.manifest(repo, reference, "HEAD")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["Content-Length"]) == len(body)
        assert head.headers["Docker-Content-Digest"] == d
        assert head.headers["Content-Type"] == media_type

    # delete the tag: the manifest stays by digest
    assert api.request("DELETE", f"/v2/{repo}/manifests/v1").status_code == 202
    assert_error(api.manifest(repo, "v1"), 404, "MANIFEST_UNKNOWN")
    assert api.manifest(repo, "v1", "HEAD").status_code == 404
    assert api.manifest(repo, d).status_code == 200
    # tag again, then delete by digest: the tag goes with it
    assert api.put_manifest(repo, "v2", body, content_type).status_code == 201
    assert api.request("DELETE", f"/v2/{repo}/manifests/{d}").status_code == 202
    assert_error(api.manifest(repo, d), 404, "MANIFEST_UNKNOWN")
    assert_error(api.manifest(repo, "v2"), 404, "MANIFEST_UNKNOWN")
    assert "v2" not in api.get(f"/v2/{repo}/tags/list").json()["tags"]
    assert_error(api.request("DELETE", f"/v2/{repo}/manifests/{d}"), 404, "MANIFEST_UNKNOWN")
    assert_error(api.request("DELETE", f"/v2/{repo}/manifests/v2"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("media_type", ALL_TYPES)
def test_content_type_used_when_media_type_absent(shared_server: LiveServer,
                                                  media_type: str) -> None:
    api = Api(shared_server)
    repo = "man/no-media-type"
    body, _ = build(api, repo, media_type, declare_type=False)
    assert "mediaType" not in json.loads(body)
    r = api.put_manifest(repo, "t", body, media_type)
    assert r.status_code == 201, r.text
    got = api.manifest(repo, digest_of(body))
    assert got.status_code == 200
    assert got.headers["Content-Type"] == media_type
    assert got.content == body


def test_podman_style_push_with_content_type_parameters(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    body, _ = build(api, "man/podman", OCI_MANIFEST, declare_type=False)
    r = api.put_manifest("man/podman", "latest", body, OCI_MANIFEST + "; charset=utf-8")
    assert r.status_code == 201, r.text
    got = api.manifest("man/podman", "latest")
    assert got.headers["Content-Type"] == OCI_MANIFEST
    assert got.content == body


def test_exact_bytes_returned(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    config, layer = b"{}", random_bytes(100)
    api.push_blob("man/bytes", config)
    api.push_blob("man/bytes", layer)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor(config, OCI_EMPTY), "layers": [descriptor(layer, OCI_LAYER)],
           "annotations": {"z": "last", "a": "first", "unicode": "\u00e9\u4e2d"}}
    body = ("\n\n  " + json.dumps(doc, indent=5, ensure_ascii=False) + " \t\r\n").encode()
    d = digest_of(body)
    assert d != digest_of(json.dumps(doc).encode())
    r = api.put_manifest("man/bytes", "pretty", body, OCI_MANIFEST)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    got = api.manifest("man/bytes", "pretty")
    assert got.content == body
    assert got.headers["Docker-Content-Digest"] == d
    assert int(got.headers["Content-Length"]) == len(body)


def test_put_by_digest_and_mismatching_digest(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    body, ct = build(api, "man/bydigest", OCI_MANIFEST)
    wrong = digest_of(body + b" ")
    assert_error(api.put_manifest("man/bydigest", wrong, body, ct), 400, "DIGEST_INVALID")
    assert_error(api.manifest("man/bydigest", wrong), 404, "MANIFEST_UNKNOWN")
    assert_error(api.manifest("man/bydigest", digest_of(body)), 404, "MANIFEST_UNKNOWN")
    r = api.put_manifest("man/bydigest", digest_of(body), body, ct)
    assert r.status_code == 201
    assert api.manifest("man/bydigest", digest_of(body)).content == body
    assert api.get("/v2/man/bydigest/tags/list").json()["tags"] == []


def test_multiple_tag_query_parameters(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    body, ct = build(api, "man/tags", OCI_MANIFEST)
    d = digest_of(body)
    r = api.put_manifest("man/tags", d, body, ct, params=[("tag", "a"), ("tag", "b"),
                                                          ("tag", "c")])
    assert r.status_code == 201, r.text
    for tag in ("a", "b", "c"):
        got = api.manifest("man/tags", tag)
        assert got.status_code == 200 and got.content == body
    r = api.put_manifest("man/tags", "d", body, ct, params=[("tag", "e")])
    assert r.status_code == 201
    assert api.get("/v2/man/tags/tags/list").json()["tags"] == ["a", "b", "c", "d", "e"]


def test_invalid_extra_tag_stores_nothing(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    body, ct = build(api, "man/badtag", OCI_MANIFEST)
    r = api.put_manifest("man/badtag", "good", body, ct, params=[("tag", "-bad")])
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_error(api.manifest("man/badtag", "good"), 404, "MANIFEST_UNKNOWN")
    assert_error(api.manifest("man/badtag", digest_of(body)), 404, "MANIFEST_UNKNOWN")


def test_tag_moves(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    one, _ = api.push_image("man/move", "latest")
    two, raw_two = api.push_image("man/move", "latest")
    got = api.manifest("man/move", "latest")
    assert got.headers["Docker-Content-Digest"] == two and got.content == raw_two
    assert api.manifest("man/move", one).status_code == 200


def test_oci_subject_header(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    subject, raw_subject = api.push_image("man/subject", "v1")
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(raw_subject)}
    config, layer = b"{}", random_bytes(64)
    api.push_blob("man/subject", config)
    api.push_blob("man/subject", layer)
    for media_type, body in (
        (OCI_MANIFEST, image_manifest(descriptor(config, OCI_EMPTY),
                                      [descriptor(layer, OCI_LAYER)],
                                      artifactType="application/vnd.example.sig",
                                      subject=subject_desc)),
        (OCI_INDEX, index_manifest([(subject, raw_subject, AMD64)],
                                   artifactType="application/vnd.example.bundle",
                                   subject=subject_desc)),
    ):
        r = api.put_manifest("man/subject", "sig", body, media_type)
        assert r.status_code == 201, r.text
        assert r.headers["OCI-Subject"] == subject
        assert api.manifest("man/subject", "sig").content == body


def test_subject_that_does_not_exist_yet_is_accepted(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    ghost = digest_of(b"a manifest pushed later")
    config, layer = b"{}", random_bytes(10)
    api.push_blob("man/ghost", config)
    api.push_blob("man/ghost", layer)
    body = image_manifest(descriptor(config, OCI_EMPTY), [descriptor(layer, OCI_LAYER)],
                          artifactType="application/x.note",
                          subject={"mediaType": OCI_MANIFEST, "digest": ghost, "size": 23})
    r = api.put_manifest("man/ghost", digest_of(body), body, OCI_MANIFEST)
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == ghost


def test_sha512_manifest_and_blobs(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    d, body = api.push_image("man/sha512", None, algorithm="sha512", layers=2)
    assert d.startswith("sha512:")
    got = api.manifest("man/sha512", d)
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["Docker-Content-Digest"] == d
    for layer in json.loads(body)["layers"]:
        assert layer["digest"].startswith("sha512:")
        assert api.blob("man/sha512", layer["digest"]).status_code == 200
    # tagged too
    r = api.put_manifest("man/sha512", d, body, OCI_MANIFEST, params={"tag": "big"})
    assert r.status_code == 201
    assert api.manifest("man/sha512", "big").headers["Docker-Content-Digest"] == d
    assert api.request("DELETE", f"/v2/man/sha512/manifests/{d}").status_code == 202
    assert_error(api.manifest("man/sha512", d), 404, "MANIFEST_UNKNOWN")


def test_unknown_manifests(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    assert_error(api.manifest("man/unknown", "latest"), 404, "MANIFEST_UNKNOWN")
    assert_error(api.manifest("man/unknown", digest_of(b"x")), 404, "MANIFEST_UNKNOWN")
    assert api.manifest("man/unknown", "latest", "HEAD").status_code == 404
    assert_error(api.manifest("man/unknown", "-not-a-tag"), 404, "MANIFEST_UNKNOWN")
    assert_error(api.manifest("man/unknown", "sha256:short"), 400, "DIGEST_INVALID")


# -- bad input: the right error and nothing stored ----------------------------------------------
def assert_nothing_stored(api: Api, repo: str, body: bytes, tag: str) -> None:
    assert_error(api.manifest(repo, tag), 404, "MANIFEST_UNKNOWN")
    assert_error(api.manifest(repo, digest_of(body)), 404, "MANIFEST_UNKNOWN")
    tags = api.get(f"/v2/{repo}/tags/list")
    assert tags.status_code == 404 or tag not in tags.json()["tags"]


def test_manifest_referencing_a_missing_blob(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    config, layer, missing = b"{}", random_bytes(100), random_bytes(100)
    api.push_blob("man/missing", config)
    api.push_blob("man/missing", layer)
    api.push_blob("man/elsewhere", missing)  # known to the registry, not to this repository
    before = blob_files(shared_server.data_dir)
    body = image_manifest(descriptor(config, OCI_EMPTY),
                          [descriptor(layer, OCI_LAYER), descriptor(missing, OCI_LAYER)])
    r = api.put_manifest("man/missing", "latest", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert digest_of(missing) in r.text
    assert_nothing_stored(api, "man/missing", body, "latest")
    assert blob_files(shared_server.data_dir) == before


def test_index_referencing_a_missing_manifest(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    present, raw_present = api.push_image("man/missing-child")
    absent = digest_of(b"{}")
    body = index_manifest([(present, raw_present, AMD64), (absent, b"{}", ARM64)])
    r = api.put_manifest("man/missing-child", "multi", body, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_nothing_stored(api, "man/missing-child", body, "multi")


def test_missing_blob_in_a_new_repository_leaves_no_repository(server: LiveServer) -> None:
    api = Api(server)
    body = image_manifest(descriptor(b"{}", OCI_EMPTY), [])
    assert_error(api.put_manifest("brand/new", "latest", body, OCI_MANIFEST), 400,
                 "MANIFEST_BLOB_UNKNOWN")
    assert_error(api.get("/v2/brand/new/tags/list"), 404, "NAME_UNKNOWN")
    assert api.get("/v2/_catalog").json()["repositories"] == []
    assert blob_files(server.data_dir) == set()


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json at all", b"[1, 2]", b'{"schemaVersion": 2,}', b"\xff\xfe\xfa",
     b"null"],
)
def test_invalid_json(shared_server: LiveServer, body: bytes) -> None:
    api = Api(shared_server)
    r = api.put_manifest("man/invalid", "latest", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_nothing_stored(api, "man/invalid", body, "latest")


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        ({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []},
         "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        ({"schemaVersion": 3, "mediaType": OCI_MANIFEST, "config": {}, "layers": []},
         OCI_MANIFEST),
        ({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}, OCI_MANIFEST),
        ({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
          "config": {"mediaType": OCI_CONFIG, "digest": "sha256:nope", "size": 1},
          "layers": []}, OCI_MANIFEST),
        ({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []},
         DOCKER_MANIFEST),  # declared type contradicts Content-Type
        ({"schemaVersion": 2, "manifests": "no"}, OCI_INDEX),
    ],
)
def test_invalid_manifests(shared_server: LiveServer, doc: object, content_type: str) -> None:
    api = Api(shared_server)
    body = json.dumps(doc).encode()
    r = api.put_manifest("man/invalid2", "latest", body, content_type)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_nothing_stored(api, "man/invalid2", body, "latest")


def test_oversized_manifest(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    config = b"{}"
    api.push_blob("man/huge", config)
    body = image_manifest(descriptor(config, OCI_EMPTY), [],
                          annotations={"pad": "x" * (4 * 1024 * 1024)})
    assert len(body) > 4 * 1024 * 1024
    r = api.put_manifest("man/huge", "latest", body, OCI_MANIFEST)
    assert_error(r, 413, "MANIFEST_INVALID")
    assert_nothing_stored(api, "man/huge", body, "latest")
    # the connection is still usable and the limit is not hit by a normal manifest
    small = image_manifest(descriptor(config, OCI_EMPTY), [])
    assert api.put_manifest("man/huge", "latest", small, OCI_MANIFEST).status_code == 201


def test_oversized_manifest_streamed_without_length(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    piece = b" " * (1024 * 1024)

    def gen() -> object:
        yield b'{"schemaVersion": 2, "pad": "'
        for _ in range(5):
            yield piece
        yield b'"}'

    r = api.request("PUT", "/v2/man/huge2/manifests/latest", data=gen(),
                    headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 413, "MANIFEST_INVALID")
    assert_error(api.manifest("man/huge2", "latest"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("tag", ["-leading-dash", ".dot", "x" * 129])
def test_put_with_invalid_tag(shared_server: LiveServer, tag: str) -> None:
    api = Api(shared_server)
    body, ct = build(api, "man/invalid-tag", OCI_MANIFEST)
    r = api.put_manifest("man/invalid-tag", tag, body, ct)
    assert r.status_code == 400
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_error(api.manifest("man/invalid-tag", digest_of(body)), 404, "MANIFEST_UNKNOWN")


def test_manifest_bytes_are_not_blobs(shared_server: LiveServer) -> None:
    """Manifests live in the index: pushing one adds no file under blobs/."""
    api = Api(shared_server)
    body, ct = build(api, "man/noblob", OCI_MANIFEST)
    before = blob_files(shared_server.data_dir)
    assert api.put_manifest("man/noblob", "x", body, ct).status_code == 201
    assert blob_files(shared_server.data_dir) == before
