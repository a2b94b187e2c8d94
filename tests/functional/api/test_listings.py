"""Tags list, _catalog (n / last / Link) and the referrers API."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

import pytest

from tests.support.live import LiveServer
from tests.support.oci_http import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Api,
    assert_error,
    descriptor,
    digest_of,
    image_manifest,
    random_bytes,
    raw_request,
)

MAX_PAGE_SIZE = 1000  # documented in README (Decisions)

LINK = re.compile(r'^<(?P<target>[^>]+)>;\s*rel="next"$')


def follow(api: Api, path: str, key: str, n: int) -> tuple[list[str], int]:
    """Walk every page through Link headers; returns (items, pages)."""
    items: list[str] = []
    target: str | None = f"{path}?n={n}"
    pages = 0
    while target is not None and pages < 100:
        r = api.get(target)
        assert r.status_code == 200, r.text
        page = r.json()[key]
        assert len(page) <= n
        items += page
        pages += 1
        link = r.headers.get("Link")
        if link is None:
            break
        m = LINK.match(link)
        assert m is not None, link
        target = m.group("target")
        assert target.startswith(path + "?")
    return items, pages


# -- tags --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tagged(shared_server: LiveServer) -> tuple[Api, list[str]]:
    api = Api(shared_server)
    d, body = api.push_image("list/tags")
    tags = sorted([f"v{i:02d}" for i in range(11)] + ["latest", "A", "_x", "z.z-1"])
    r = api.put_manifest("list/tags", d, body, OCI_MANIFEST,
                         params=[("tag", t) for t in tags])
    assert r.status_code == 201
    return api, tags


def test_tags_list(tagged: tuple[Api, list[str]]) -> None:
    api, tags = tagged
    r = api.get("/v2/list/tags/tags/list")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"name": "list/tags", "tags": tags}
    assert "Link" not in r.headers


@pytest.mark.parametrize("n", [1, 4, 5, 15, 100])
def test_tags_pagination_follows_link(tagged: tuple[Api, list[str]], n: int) -> None:
    api, tags = tagged
    items, pages = follow(api, "/v2/list/tags/tags/list", "tags", n)
    assert items == tags
    assert pages >= -(-len(tags) // n)


def test_tags_n_and_last(tagged: tuple[Api, list[str]]) -> None:
    api, tags = tagged
    r = api.get("/v2/list/tags/tags/list", params={"n": 3})
    assert r.json()["tags"] == tags[:3]
    assert r.headers["Link"] == (
        f'</v2/list/tags/tags/list?n=3&last={tags[2]}>; rel="next"'
    )
    r = api.get("/v2/list/tags/tags/list", params={"n": 2, "last": "v05"})
    assert r.json()["tags"] == ["v06", "v07"]
    r = api.get("/v2/list/tags/tags/list", params={"last": "v09"})
    assert r.json()["tags"] == [t for t in tags if t > "v09"]
    r = api.get("/v2/list/tags/tags/list", params={"n": 5, "last": "zzz"})
    assert r.json()["tags"] == []
    assert "Link" not in r.headers


def test_tags_n_zero_and_invalid(tagged: tuple[Api, list[str]]) -> None:
    api, _tags = tagged
    for zero in ("0", "00000000000000000000000"):
        r = api.get("/v2/list/tags/tags/list", params={"n": zero})
        assert r.status_code == 200 and r.json()["tags"] == []
        assert "Link" not in r.headers
    for bad in ("-1", "abc", "1.5"):
        assert api.get("/v2/list/tags/tags/list", params={"n": bad}).status_code == 400


HUGE_N = ["1001", "9223372036854775807", "9223372036854775808", "99999999999999999999",
          "1" * 5000]
BAD_N = ["-1", "abc", "1.5", "+5", " 5", "5 ", "0x10", "1e3", "\uff15", "\u00b2", "\u0661"]


@pytest.mark.parametrize("n", HUGE_N, ids=lambda n: n[:24])
def test_n_beyond_any_integer_is_clamped(tagged: tuple[Api, list[str]], n: str) -> None:
    api, tags = tagged
    r = api.get("/v2/list/tags/tags/list", params={"n": n})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == tags
    assert "Link" not in r.headers
    r = api.get("/v2/_catalog", params={"n": n})
    assert r.status_code == 200, r.text
    assert "list/tags" in r.json()["repositories"]


@pytest.mark.parametrize("n", BAD_N)
def test_n_that_is_not_a_count(tagged: tuple[Api, list[str]], n: str) -> None:
    api, _tags = tagged
    for path in ("/v2/list/tags/tags/list", "/v2/_catalog"):
        assert_error(api.get(path, params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")


def test_page_size_is_bounded_and_links_on(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    d, body = api.push_image("list/many")
    tags = [f"t{i:04d}" for i in range(MAX_PAGE_SIZE + 5)]
    for start in range(0, len(tags), 400):  # a few PUTs: one URL holds ~700 tag params
        r = api.put_manifest("list/many", d, body, OCI_MANIFEST,
                             params=[("tag", t) for t in tags[start:start + 400]])
        assert r.status_code == 201, r.text
    r = api.get("/v2/list/many/tags/list", params={"n": str(10**30)})
    assert r.json()["tags"] == tags[:MAX_PAGE_SIZE]
    assert r.headers["Link"] == (f"</v2/list/many/tags/list?n={MAX_PAGE_SIZE}"
                                 f'&last={tags[MAX_PAGE_SIZE - 1]}>; rel="next"')
    items, pages = follow(api, "/v2/list/many/tags/list", "tags", MAX_PAGE_SIZE)
    assert items == tags and pages == 2
    assert api.get("/v2/list/many/tags/list").json()["tags"] == tags  # no n: everything


@pytest.mark.parametrize("last", ["%00", "v05%00", "v05%00zz", "%00%00", "v05%0d%0a", "x" * 6000,
                                  "%27%20OR%201%3D1--", "%25", "%ff", "%ed%a0%80"])
def test_hostile_last(tagged: tuple[Api, list[str]], last: str) -> None:
    api, tags = tagged
    decoded = unquote(last, errors="strict") if "%ff" not in last and "%ed" not in last else None
    r = raw_request(api.server, "GET", f"/v2/list/tags/tags/list?n=100&last={last}")
    assert r.status == 200, r.body[:300]
    got = json.loads(r.body)["tags"]
    if decoded is not None:
        assert got == [t for t in tags if t > decoded]
    r = raw_request(api.server, "GET", f"/v2/_catalog?last={last}")
    assert r.status == 200, r.body[:300]
    assert isinstance(json.loads(r.body)["repositories"], list)


def test_tags_of_unknown_repository(shared_server: LiveServer) -> None:
    assert_error(Api(shared_server).get("/v2/list/none/tags/list"), 404, "NAME_UNKNOWN")


def test_deleted_tag_leaves_the_list(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    api.push_image("list/deltag", "keep")
    d, body = api.push_image("list/deltag", "drop")
    assert api.request("DELETE", "/v2/list/deltag/manifests/drop").status_code == 202
    assert api.get("/v2/list/deltag/tags/list").json()["tags"] == ["keep"]
    assert api.manifest("list/deltag", d).content == body


# -- catalog -----------------------------------------------------------------------------------
def test_catalog_pagination(server: LiveServer) -> None:
    api = Api(server)
    assert api.get("/v2/_catalog").json() == {"repositories": []}
    names = sorted([f"team{i % 3}/model-{i:02d}" for i in range(10)] + ["a", "a/b", "zz"])
    for name in names:
        api.push_blob(name, b"x")
    r = api.get("/v2/_catalog")
    assert r.status_code == 200
    assert r.json() == {"repositories": names}
    for n in (1, 3, 4, 13, 50):
        items, _ = follow(api, "/v2/_catalog", "repositories", n)
        assert items == names, n
    r = api.get("/v2/_catalog", params={"n": 2, "last": "a/b"})
    assert r.json()["repositories"] == names[2:4]
    assert r.headers["Link"] == f'</v2/_catalog?n=2&last={names[3].replace("/", "%2F")}>; ' \
        'rel="next"'


# -- referrers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def referred(shared_server: LiveServer) -> tuple[Api, str, dict[str, tuple[str, int, str]]]:
    """A subject and three referrers: {digest: (artifactType, size, note)}."""
    api = Api(shared_server)
    subject, raw_subject = api.push_image("list/refs", "v1")
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(raw_subject)}
    config = b"{}"
    api.push_blob("list/refs", config)
    found = {}
    for artifact_type, note in (("application/vnd.example.sig", "sig-1"),
                                ("application/spdx+json", "sbom"),
                                ("application/vnd.example.sig", "sig-2")):
        layer = random_bytes(64)
        api.push_blob("list/refs", layer)
        body = image_manifest(descriptor(config, OCI_EMPTY), [descriptor(layer, OCI_LAYER)],
                              artifactType=artifact_type, subject=subject_desc,
                              annotations={"note": note})
        r = api.put_manifest("list/refs", digest_of(body), body, OCI_MANIFEST)
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject
        found[digest_of(body)] = (artifact_type, len(body), note)
    # one without artifactType: its config media type is what the API reports
    model_config = b'{"descriptor": {}}'
    api.push_blob("list/refs", model_config)
    body = image_manifest(descriptor(model_config, "application/vnd.cncf.model.config.v1+json"),
                          [], subject=subject_desc)
    assert api.put_manifest("list/refs", digest_of(body), body, OCI_MANIFEST).status_code == 201
    found[digest_of(body)] = ("application/vnd.cncf.model.config.v1+json", len(body), "")
    return api, subject, found


def test_referrers(referred: tuple[Api, str, dict[str, tuple[str, int, str]]]) -> None:
    api, subject, expected = referred
    r = api.get(f"/v2/list/refs/referrers/{subject}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    doc = r.json()
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    got = {m["digest"]: m for m in doc["manifests"]}
    assert set(got) == set(expected)
    for d, (artifact_type, size, note) in expected.items():
        m = got[d]
        assert m["mediaType"] == OCI_MANIFEST
        assert m["size"] == size
        assert m["artifactType"] == artifact_type
        if note:
            assert m["annotations"] == {"note": note}


def test_referrers_artifact_type_filter(
    referred: tuple[Api, str, dict[str, tuple[str, int, str]]],
) -> None:
    api, subject, expected = referred
    for artifact_type in ("application/vnd.example.sig", "application/spdx+json",
                          "application/vnd.cncf.model.config.v1+json"):
        r = api.get(f"/v2/list/refs/referrers/{subject}",
                    params={"artifactType": artifact_type})
        assert r.status_code == 200
        assert r.headers["OCI-Filters-Applied"] == "artifactType"
        got = {m["digest"] for m in r.json()["manifests"]}
        assert got == {d for d, v in expected.items() if v[0] == artifact_type}
    r = api.get(f"/v2/list/refs/referrers/{subject}", params={"artifactType": "nothing/here"})
    assert r.status_code == 200
    assert r.json()["manifests"] == []
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


def test_referrers_of_unknown_subject_is_an_empty_index(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    for repo in ("list/refs", "list/no-such-repo"):
        r = api.get(f"/v2/{repo}/referrers/{digest_of(b'nobody points here')}")
        assert r.status_code == 200
        assert r.headers["Content-Type"] == OCI_INDEX
        assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_referrers_are_per_repository(
    referred: tuple[Api, str, dict[str, tuple[str, int, str]]],
) -> None:
    api, subject, _ = referred
    r = api.get(f"/v2/list/other/referrers/{subject}")
    assert r.status_code == 200 and r.json()["manifests"] == []


def test_referrer_goes_when_deleted(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    subject, raw_subject = api.push_image("list/refs-del", "v1")
    d, _ = api.push_image("list/refs-del", None, artifactType="application/x.tmp",
                          subject={"mediaType": OCI_MANIFEST, "digest": subject,
                                   "size": len(raw_subject)})
    r = api.get(f"/v2/list/refs-del/referrers/{subject}")
    assert [m["digest"] for m in r.json()["manifests"]] == [d]
    assert api.request("DELETE", f"/v2/list/refs-del/manifests/{d}").status_code == 202
    r = api.get(f"/v2/list/refs-del/referrers/{subject}")
    assert r.json()["manifests"] == []


def test_referrers_with_malformed_digest(shared_server: LiveServer) -> None:
    assert_error(Api(shared_server).get("/v2/list/refs/referrers/sha256:zz"), 400,
                 "DIGEST_INVALID")
