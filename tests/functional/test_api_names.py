"""Repository names: the spec's grammar, and nothing in a name reaches outside the data dir.

Requests go over raw sockets so that dot segments and percent-encodings reach the server
exactly as written (`requests` would normalise `../` away before sending).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.oci_http import (
    OCI_EMPTY,
    Api,
    assert_error,
    blob_files,
    descriptor,
    digest_of,
    image_manifest,
    raw_request,
    upload_dirs,
)
from tests.live import LiveServer

BAD_NAMES = [
    "../x",
    "%2e%2e/x",
    "%2E%2E%2Fx",
    "a/../b",
    "a/%2e%2e/%2e%2e/%2e%2e/etc",
    "..%2f..%2fetc",
    "./x",
    "Upper",
    "library/Ubuntu",
    "a//b",
    "a/",
    "-x",
    "x.",
    "a%00b",
    "a%0a",
    "%2fabs",
    "a" * 256,
]


def tree(root: Path, skip: Path) -> set[str]:
    """Every path under `root` (except under `skip`, and server logs)."""
    out = set()
    for p in root.rglob("*"):
        if p == skip or skip in p.parents or p.name.startswith("server-"):
            continue
        out.add(str(p.relative_to(root)))
    return out


def assert_rejected(status: int, body: bytes) -> None:
    assert status in (400, 404), (status, body[:300])
    if status == 400:
        assert b"NAME_INVALID" in body, body[:300]


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that only ever sees bad names: it must end as empty as it started."""
    d = tmp_path_factory.mktemp("bad-names") / "data"
    d.mkdir()
    s = LiveServer(d)
    s.start()
    yield s
    s.stop()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_rejected_everywhere(untouched: LiveServer, name: str) -> None:
    server = untouched
    data = b"payload"
    d = digest_of(data)
    manifest = image_manifest(descriptor(b"{}", OCI_EMPTY), [])
    outside = server.data_dir.parent
    before = tree(outside, server.data_dir)

    requests_to_try = [
        ("POST", f"/v2/{name}/blobs/uploads/?digest={d}", data),
        ("POST", f"/v2/{name}/blobs/uploads/", b""),
        ("POST", f"/v2/{name}/blobs/uploads/?mount={d}&from=ok", b""),
        ("PUT", f"/v2/{name}/manifests/latest", manifest),
        ("GET", f"/v2/{name}/manifests/latest", b""),
        ("DELETE", f"/v2/{name}/manifests/latest", b""),
        ("GET", f"/v2/{name}/blobs/{d}", b""),
        ("DELETE", f"/v2/{name}/blobs/{d}", b""),
        ("GET", f"/v2/{name}/tags/list", b""),
        ("GET", f"/v2/{name}/referrers/{d}", b""),
        ("GET", f"/v2/{name}/blobs/uploads/{'0' * 32}", b""),
        ("PATCH", f"/v2/{name}/blobs/uploads/{'0' * 32}", data),
    ]
    for method, target, body in requests_to_try:
        r = raw_request(server, method, target, body)
        assert_rejected(r.status, r.body)

    api = Api(server)
    assert api.get("/v2/_catalog").json()["repositories"] == []
    assert blob_files(server.data_dir) == set()
    assert upload_dirs(server.data_dir) == set()
    assert tree(outside, server.data_dir) == before


def test_mount_from_a_bad_name(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    d = api.push_blob("names/ok", b"mount me")
    for source in ("../names/ok", "Names/ok", "names//ok"):
        r = api.request("POST", "/v2/names/to/blobs/uploads/",
                        params={"mount": d, "from": source})
        assert_error(r, 400, "NAME_INVALID")
    assert_error(api.blob("names/to", d), 404, "BLOB_UNKNOWN")


def test_upper_case_name(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    r = api.request("POST", "/v2/Library/ubuntu/blobs/uploads/")
    assert_error(r, 400, "NAME_INVALID")
    assert_error(api.get("/v2/Library/ubuntu/tags/list"), 400, "NAME_INVALID")


def test_longest_valid_name(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    name = "/".join(["a" * 50] * 5) + "b"  # 255 characters
    assert len(name) == 255
    d = api.push_blob(name, b"long")
    assert api.blob(name, d).content == b"long"
    too_long = name + "e"
    r = api.request("POST", f"/v2/{too_long}/blobs/uploads/")
    assert_error(r, 400, "NAME_INVALID")


@pytest.mark.parametrize("reference", ["..", "..%2F..%2Fetc", "%2e%2e", "a%2Fb"])
def test_bad_references(shared_server: LiveServer, reference: str) -> None:
    api = Api(shared_server)
    api.push_image("names/refs", "ok")
    for method in ("GET", "DELETE"):
        r = raw_request(shared_server, method, f"/v2/names/refs/manifests/{reference}")
        assert r.status in (400, 404), (method, reference, r.status)
    r = raw_request(shared_server, "PUT", f"/v2/names/refs/manifests/{reference}",
                    image_manifest(descriptor(b"{}", OCI_EMPTY), []),
                    {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status in (400, 404)
    assert api.get("/v2/names/refs/tags/list").json()["tags"] == ["ok"]
