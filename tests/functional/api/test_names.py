"""Repository names: the spec's grammar, and nothing in a name reaches outside the data dir.

Requests go over raw sockets so that dot segments and percent-encodings reach the server
exactly as written (`requests` would normalise `../` away before sending).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.authkit import ADMIN_PASSWORD
from tests.support.live import LiveServer
from tests.support.oci_http import (
    OCI_EMPTY,
    Api,
    RawResponse,
    assert_error,
    blob_files,
    descriptor,
    digest_of,
    image_manifest,
    raw_request,
    upload_dirs,
)

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


# -- control characters: NAME_INVALID on every route, with and without --auth ------------------
CONTROL_NAMES = ["a%00b", "a%0d%0ab", "a%0ab", "a%0db", "ok/a%0a", "a%0a/ok", "%0a", "a%09b",
                 "a%7f"]
ROUTES = [
    ("GET", "/v2/{name}/blobs/{digest}"),
    ("HEAD", "/v2/{name}/blobs/{digest}"),
    ("DELETE", "/v2/{name}/blobs/{digest}"),
    ("GET", "/v2/{name}/manifests/latest"),
    ("HEAD", "/v2/{name}/manifests/latest"),
    ("PUT", "/v2/{name}/manifests/latest"),
    ("DELETE", "/v2/{name}/manifests/latest"),
    ("POST", "/v2/{name}/blobs/uploads/"),
    ("POST", "/v2/{name}/blobs/uploads/?digest={digest}"),
    ("GET", "/v2/{name}/blobs/uploads/" + "0" * 32),
    ("PATCH", "/v2/{name}/blobs/uploads/" + "0" * 32),
    ("PUT", "/v2/{name}/blobs/uploads/" + "0" * 32 + "?digest={digest}"),
    ("DELETE", "/v2/{name}/blobs/uploads/" + "0" * 32),
    ("GET", "/v2/{name}/tags/list"),
    ("GET", "/v2/{name}/tags/list?n=1&last=a"),
    ("GET", "/v2/{name}/referrers/{digest}"),
]


@pytest.fixture(scope="module")
def auth_untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    d = tmp_path_factory.mktemp("bad-names-auth") / "data"
    d.mkdir()
    s = LiveServer(d, "--auth", env={"STABLEMIRROR_ADMIN_PASSWORD": ADMIN_PASSWORD})
    s.start()
    yield s
    s.stop()


def assert_name_invalid(r: RawResponse, what: str) -> None:
    assert r.status == 400, (what, r.status, r.body[:300])
    assert r.headers.get("docker-distribution-api-version") == "registry/2.0", what
    if not what.startswith("HEAD"):
        assert r.headers.get("content-type", "").startswith("application/json"), what
        assert json.loads(r.body)["errors"][0]["code"] == "NAME_INVALID", (what, r.body)


@pytest.mark.parametrize("auth", [False, True], ids=["open", "auth"])
@pytest.mark.parametrize("name", CONTROL_NAMES)
def test_control_characters_in_names(untouched: LiveServer, auth_untouched: LiveServer,
                                     name: str, auth: bool) -> None:
    server = auth_untouched if auth else untouched
    d = digest_of(b"payload")
    body = image_manifest(descriptor(b"{}", OCI_EMPTY), [])
    for method, template in ROUTES:
        target = template.format(name=name, digest=d)
        r = raw_request(server, method, target, body if method in ("PUT", "PATCH") else b"")
        assert_name_invalid(r, f"{method} {target}")
    assert server.proc is not None and server.proc.poll() is None
    assert blob_files(server.data_dir) == set()
    assert upload_dirs(server.data_dir) == set()


@pytest.mark.parametrize("suffix", ["%0a", "%0d%0a", "%00"])
def test_control_characters_after_a_route(untouched: LiveServer, suffix: str) -> None:
    """`$` in a pattern would match before a trailing newline: the route must not."""
    Api(untouched).push_blob("names/route", b"x")
    for target in (f"/v2/names/route/tags/list{suffix}", f"/v2/_catalog{suffix}"):
        r = raw_request(untouched, "GET", target)
        assert r.status in (400, 404), (target, r.status)
        assert b'"tags"' not in r.body and b'"repositories"' not in r.body, target


@pytest.mark.parametrize("scope_name", ["a%00b", "a%0d%0ab", "a%0ab", "Upper", "../x", "a//b"])
def test_token_scope_with_an_invalid_name(auth_untouched: LiveServer, scope_name: str) -> None:
    server = auth_untouched
    for target in (f"/token?service=stablemirror&scope=repository:{scope_name}:pull",
                   f"/token?service=stablemirror&scope=repository:ok/x:pull"
                   f"&scope=repository:{scope_name}:pull,push"):
        r = raw_request(server, "GET", target)
        assert_name_invalid(r, target)
    form = f"grant_type=password&username=admin&password={ADMIN_PASSWORD}" \
        f"&service=stablemirror&scope=repository:{scope_name}:pull"
    r = raw_request(server, "POST", "/token", form.encode(),
                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert_name_invalid(r, "POST /token")
    # a valid scope still gets its token
    ok = raw_request(server, "GET", "/token?service=stablemirror&scope=repository:ok/x:pull")
    assert ok.status == 200 and b'"token"' in ok.body
