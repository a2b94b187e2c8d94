"""GET / HEAD / DELETE /v2/<name>/blobs/<digest>, with Range."""

from __future__ import annotations

import pytest

from tests.support.live import LiveServer
from tests.support.oci_http import (
    Api,
    MiB,
    assert_error,
    blob_files,
    digest_of,
    random_bytes,
)


@pytest.fixture(scope="module")
def pushed(shared_server: LiveServer) -> tuple[Api, bytes, str]:
    api = Api(shared_server)
    data = random_bytes(3 * MiB + 123)  # several read chunks, odd size
    return api, data, api.push_blob("blobs/one", data)


def test_get_and_head(pushed: tuple[Api, bytes, str]) -> None:
    api, data, d = pushed
    r = api.blob("blobs/one", d)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == d
    assert int(r.headers["Content-Length"]) == len(data)
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"

    r = api.head(f"/v2/blobs/one/blobs/{d}")
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["Content-Length"]) == len(data)
    assert r.headers["Docker-Content-Digest"] == d


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=1048570-1048600", 1048570, 1048600),  # across a read-chunk boundary
        ("bytes=100-", 100, None),  # open-ended
        ("bytes=-7", -7, None),  # suffix
        ("bytes=-1", -1, None),
        ("bytes=3145800-99999999", 3145800, None),  # end past the size is clamped
    ],
)
def test_range(pushed: tuple[Api, bytes, str], header: str, start: int, end: int | None
               ) -> None:
    api, data, d = pushed
    r = api.get(f"/v2/blobs/one/blobs/{d}", headers={"Range": header})
    assert r.status_code == 206, (header, r.status_code)
    expected = data[start:] if end is None else data[start : end + 1]
    assert r.content == expected
    first = start if start >= 0 else len(data) + start
    last = first + len(expected) - 1
    assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    assert int(r.headers["Content-Length"]) == len(expected)


def test_suffix_longer_than_blob_is_the_whole_blob(pushed: tuple[Api, bytes, str]) -> None:
    api, data, d = pushed
    r = api.get(f"/v2/blobs/one/blobs/{d}", headers={"Range": f"bytes=-{len(data) * 2}"})
    assert r.status_code in (200, 206)
    assert r.content == data


@pytest.mark.parametrize("offset", [0, 1, 1000])
def test_range_not_satisfiable(pushed: tuple[Api, bytes, str], offset: int) -> None:
    api, data, d = pushed
    r = api.get(f"/v2/blobs/one/blobs/{d}",
                headers={"Range": f"bytes={len(data) + offset}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_range_requests_leave_no_server_errors(shared_server: LiveServer,
                                               pushed: tuple[Api, bytes, str]) -> None:
    api, data, d = pushed
    for header in ("bytes=0-9", "bytes=-5", f"bytes={len(data)}-"):
        api.get(f"/v2/blobs/one/blobs/{d}", headers={"Range": header})
    r = api.get(f"/v2/blobs/one/blobs/{d}", headers={"Range": "bytes=5-9"})
    assert r.status_code == 206 and r.content == data[5:10]
    assert "Traceback" not in shared_server.log()


def test_unknown_blob(shared_server: LiveServer, pushed: tuple[Api, bytes, str]) -> None:
    api, _data, d = pushed
    unknown = digest_of(b"never pushed")
    assert_error(api.blob("blobs/one", unknown), 404, "BLOB_UNKNOWN")
    assert api.head(f"/v2/blobs/one/blobs/{unknown}").status_code == 404
    # known bytes, but not linked into this repository
    assert_error(api.blob("blobs/other", d), 404, "BLOB_UNKNOWN")
    assert api.head(f"/v2/blobs/other/blobs/{d}").status_code == 404


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e",
                                 "sha256:" + "Z" * 64, "latest"])
def test_malformed_digest(shared_server: LiveServer, bad: str) -> None:
    r = Api(shared_server).blob("blobs/one", bad)
    assert_error(r, 400, "DIGEST_INVALID")


def test_sha512_blob(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(200_000)
    d = api.push_blob("blobs/sha512", data, "sha512")
    assert d.startswith("sha512:") and len(d) == 7 + 128
    r = api.blob("blobs/sha512", d)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == d
    r = api.get(f"/v2/blobs/sha512/blobs/{d}", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    assert d in blob_files(shared_server.data_dir)
    # the same bytes under sha256 are a different blob, not yet pushed
    assert_error(api.blob("blobs/sha512", digest_of(data)), 404, "BLOB_UNKNOWN")


def test_delete_blob(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(1000)
    d = api.push_blob("blobs/del-a", data)
    api.push_blob("blobs/del-b", data)
    r = api.request("DELETE", f"/v2/blobs/del-a/blobs/{d}")
    assert r.status_code == 202
    assert_error(api.blob("blobs/del-a", d), 404, "BLOB_UNKNOWN")
    assert api.head(f"/v2/blobs/del-a/blobs/{d}").status_code == 404
    # another repository that holds the same blob is not affected
    r = api.blob("blobs/del-b", d)
    assert r.status_code == 200 and r.content == data
    assert_error(api.request("DELETE", f"/v2/blobs/del-a/blobs/{d}"), 404, "BLOB_UNKNOWN")
    assert_error(api.request("DELETE", f"/v2/blobs/none/blobs/{d}"), 404, "BLOB_UNKNOWN")
    # pushing again brings it back
    api.push_blob("blobs/del-a", data)
    assert api.blob("blobs/del-a", d).content == data


def test_one_copy_per_digest(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(5000)
    d = digest_of(data)
    for repo in ("dedupe/a", "dedupe/b", "dedupe/c"):
        api.push_blob(repo, data)
    files = list((shared_server.data_dir / "blobs").rglob(d.split(":")[1]))
    assert len(files) == 1
    assert files[0].read_bytes() == data
    for repo in ("dedupe/a", "dedupe/b", "dedupe/c"):
        assert api.blob(repo, d).content == data
