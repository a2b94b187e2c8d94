"""Blob uploads: monolithic, chunked sessions, status, cancel, mounts, restarts, crashes."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from tests.support.live import LiveServer
from tests.support.oci_http import (
    TIMEOUT,
    Api,
    MiB,
    assert_blob_files_intact,
    assert_error,
    blob_files,
    digest_of,
    random_bytes,
    send_partial,
    upload_dirs,
    wait_until,
)


def upload_id(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


# -- monolithic -----------------------------------------------------------------------------
def test_monolithic_post(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(100_000)
    d = digest_of(data)
    r = api.request("POST", "/v2/up/mono/blobs/uploads/", params={"digest": d}, data=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"].endswith(f"/v2/up/mono/blobs/{d}")
    got = api.get(r.headers["Location"])
    assert got.status_code == 200 and got.content == data


def test_monolithic_empty_blob(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    d = api.push_blob("up/empty", b"")
    r = api.blob("up/empty", d)
    assert r.status_code == 200 and r.content == b""


def test_monolithic_wrong_digest_stores_nothing(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(50_000)
    claimed = digest_of(random_bytes(10))
    before = blob_files(shared_server.data_dir)
    sessions = upload_dirs(shared_server.data_dir)
    r = api.request("POST", "/v2/up/wrong/blobs/uploads/", params={"digest": claimed},
                    data=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(api.blob("up/wrong", claimed), 404, "BLOB_UNKNOWN")
    assert_error(api.blob("up/wrong", digest_of(data)), 404, "BLOB_UNKNOWN")
    assert blob_files(shared_server.data_dir) == before
    assert upload_dirs(shared_server.data_dir) == sessions  # the staged bytes are gone


@pytest.mark.parametrize("bad", ["sha256:1234", "crc32:abcd", "nonsense"])
def test_monolithic_malformed_digest(shared_server: LiveServer, bad: str) -> None:
    r = Api(shared_server).request("POST", "/v2/up/bad/blobs/uploads/", params={"digest": bad},
                                   data=b"abc")
    assert_error(r, 400, "DIGEST_INVALID")


def test_post_then_put_whole_body(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(70_000)
    d = digest_of(data)
    location = api.start_upload("up/postput")
    r = api.finish(location, d, data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert api.blob("up/postput", d).content == data


# -- chunked sessions --------------------------------------------------------------------------
def test_chunked_session(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    r = api.request("POST", "/v2/up/chunked/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    uid = upload_id(location)
    assert r.headers["Docker-Upload-UUID"] == uid
    assert r.headers["Range"] == "0-0"
    assert int(r.headers["OCI-Chunk-Min-Length"]) > 0
    assert uid in upload_dirs(shared_server.data_dir)

    data = random_bytes(3 * MiB + 17)
    parts = [data[: MiB + 5], data[MiB + 5 : 2 * MiB + 9], data[2 * MiB + 9 :]]
    offset = 0
    for part in parts:
        r = api.patch(location, part, start=offset)
        assert r.status_code == 202, r.text
        offset += len(part)
        assert r.headers["Range"] == f"0-{offset - 1}"
        assert r.headers["Docker-Upload-UUID"] == uid
        location = r.headers["Location"]
        status = api.get(location)
        assert status.status_code == 204
        assert status.headers["Range"] == f"0-{offset - 1}"
        assert status.headers["Docker-Upload-UUID"] == uid

    d = digest_of(data)
    assert_error(api.blob("up/chunked", d), 404, "BLOB_UNKNOWN")  # not before PUT
    r = api.finish(location, d)
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/v2/up/chunked/blobs/{d}")
    assert r.headers["Docker-Content-Digest"] == d
    assert api.blob("up/chunked", d).content == data
    assert uid not in upload_dirs(shared_server.data_dir)
    assert_error(api.get(location), 404, "BLOB_UPLOAD_UNKNOWN")  # the session is over


def test_chunks_without_content_range_and_final_chunk_on_put(shared_server: LiveServer
                                                             ) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/streamed")
    data = random_bytes(300_000)
    r = api.patch(location, data[:100_000])
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    r = api.patch(r.headers["Location"], data[100_000:200_000])
    assert r.status_code == 202 and r.headers["Range"] == "0-199999"
    r = api.finish(r.headers["Location"], digest_of(data), data[200_000:])
    assert r.status_code == 201, r.text
    assert api.blob("up/streamed", digest_of(data)).content == data


def test_chunked_upload_with_chunked_transfer_encoding(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/te")
    data = random_bytes(250_000)

    def gen() -> object:
        for i in range(0, len(data), 60_000):
            yield data[i : i + 60_000]

    r = api.request("PATCH", location, data=gen(),
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = api.finish(r.headers["Location"], digest_of(data))
    assert r.status_code == 201
    assert api.blob("up/te", digest_of(data)).content == data


@pytest.mark.parametrize("start", [5, 2, 0, 1000])
def test_out_of_order_chunk(shared_server: LiveServer, start: int) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/order")
    first, second = random_bytes(4), random_bytes(4)
    r = api.patch(location, first, start=0)
    assert r.status_code == 202
    before = blob_files(shared_server.data_dir)
    r = api.patch(location, b"XYZ", start=start)
    assert_error(r, 416, "BLOB_UPLOAD_INVALID")
    assert r.headers["Range"] == "0-3"
    status = api.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-3"
    # the session goes on from where it really is
    r = api.patch(location, second, start=4)
    assert r.status_code == 202
    d = digest_of(first + second)
    r = api.finish(location, d)
    assert r.status_code == 201
    assert api.blob("up/order", d).content == first + second
    assert blob_files(shared_server.data_dir) - before == {d}


def test_first_chunk_must_start_at_zero(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/order0")
    r = api.patch(location, b"abc", start=3)
    assert_error(r, 416, "BLOB_UPLOAD_INVALID")
    assert api.get(location).headers["Range"] == "0-0"
    assert api.patch(location, b"abc", start=0).status_code == 202


@pytest.mark.parametrize("content_range", ["0-9", "5-3", "bytes", "a-b", "0-"])
def test_content_range_inconsistent_with_body(shared_server: LiveServer,
                                              content_range: str) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/cr")
    r = api.request("PATCH", location, data=b"abc",
                    headers={"Content-Range": content_range,
                             "Content-Type": "application/octet-stream"})
    assert_error(r, 400, "BLOB_UPLOAD_INVALID")
    assert api.get(location).headers["Range"] == "0-0"


def test_put_with_wrong_digest_ends_session_and_stores_nothing(shared_server: LiveServer
                                                                ) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/wrongput")
    data = random_bytes(10_000)
    assert api.patch(location, data, start=0).status_code == 202
    before = blob_files(shared_server.data_dir)
    wrong = digest_of(data + b"!")
    assert_error(api.finish(location, wrong), 400, "DIGEST_INVALID")
    assert_error(api.blob("up/wrongput", wrong), 404, "BLOB_UNKNOWN")
    assert_error(api.blob("up/wrongput", digest_of(data)), 404, "BLOB_UNKNOWN")
    assert blob_files(shared_server.data_dir) == before
    assert upload_id(location) not in upload_dirs(shared_server.data_dir)
    assert_error(api.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_put_without_digest(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/nodigest")
    assert api.patch(location, b"abc", start=0).status_code == 202
    r = api.request("PUT", location)
    assert_error(r, 400, "DIGEST_INVALID")


def test_cancel_upload(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/cancel")
    assert api.patch(location, b"x" * 1000, start=0).status_code == 202
    uid = upload_id(location)
    assert uid in upload_dirs(shared_server.data_dir)
    r = api.request("DELETE", location)
    assert r.status_code == 204
    assert uid not in upload_dirs(shared_server.data_dir)
    assert_error(api.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.patch(location, b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.finish(location, digest_of(b"x" * 1000)), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.request("DELETE", location), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("uid", ["0" * 32, "f" * 32, "not-an-upload", "ABCDEF" * 6,
                                 "a" * 64])
def test_unknown_upload_id(shared_server: LiveServer, uid: str) -> None:
    api = Api(shared_server)
    location = f"/v2/up/unknown/blobs/uploads/{uid}"
    assert_error(api.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.patch(location, b"abc"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.patch(location, b"abc", start=0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.finish(location, digest_of(b"abc"), b"abc"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.request("DELETE", location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.blob("up/unknown", digest_of(b"abc")), 404, "BLOB_UNKNOWN")


def test_session_belongs_to_its_repository(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    location = api.start_upload("up/owner")
    other = location.replace("/v2/up/owner/", "/v2/up/thief/")
    assert other != location
    assert_error(api.get(other), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.patch(other, b"x", start=0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(api.request("DELETE", other), 404, "BLOB_UPLOAD_UNKNOWN")
    assert api.get(location).status_code == 204


# -- mounts ------------------------------------------------------------------------------------
def test_cross_repository_mount(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(20_000)
    d = api.push_blob("mount/src", data)
    before = blob_files(shared_server.data_dir)
    r = api.request("POST", "/v2/mount/dst/blobs/uploads/",
                    params={"mount": d, "from": "mount/src"})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"].endswith(f"/v2/mount/dst/blobs/{d}")
    assert api.blob("mount/dst", d).content == data
    assert blob_files(shared_server.data_dir) == before  # linked, not copied


def test_automatic_mount_without_from(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(20_000)
    d = api.push_blob("mount/auto-src", data)
    r = api.request("POST", "/v2/mount/auto-dst/blobs/uploads/", params={"mount": d})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert api.blob("mount/auto-dst", d).content == data


def test_mount_of_unknown_digest_opens_a_session(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    unknown = digest_of(random_bytes(32))
    for params in ({"mount": unknown, "from": "mount/src"}, {"mount": unknown}):
        r = api.request("POST", "/v2/mount/miss/blobs/uploads/", params=params)
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        assert "/v2/mount/miss/blobs/uploads/" in location
        assert api.get(location).status_code == 204
        assert_error(api.blob("mount/miss", unknown), 404, "BLOB_UNKNOWN")
        api.request("DELETE", location)


def test_mount_from_a_repository_that_lacks_the_blob(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(1000)
    d = api.push_blob("mount/holder", data)
    r = api.request("POST", "/v2/mount/taker/blobs/uploads/",
                    params={"mount": d, "from": "mount/empty-source"})
    assert r.status_code == 202  # not from there: an ordinary session instead
    assert_error(api.blob("mount/taker", d), 404, "BLOB_UNKNOWN")
    r = api.finish(r.headers["Location"], d, data)
    assert r.status_code == 201
    assert api.blob("mount/taker", d).content == data


def test_mount_from_an_invalid_name(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    d = api.push_blob("mount/valid", b"v")
    r = api.request("POST", "/v2/mount/to/blobs/uploads/", params={"mount": d, "from": "../x"})
    assert_error(r, 400, "NAME_INVALID")


# -- sessions and server restarts -------------------------------------------------------------
def test_upload_session_survives_restart(server: LiveServer) -> None:
    api = Api(server)
    data = random_bytes(2 * MiB + 333)
    location = api.start_upload("restart/blob")
    assert api.patch(location, data[:MiB], start=0).status_code == 202
    server.restart()
    api = Api(server)
    status = api.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{MiB - 1}"
    r = api.patch(location, data[MiB : 2 * MiB], start=MiB)
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{2 * MiB - 1}"
    r = api.finish(r.headers["Location"], digest_of(data), data[2 * MiB :])
    assert r.status_code == 201, r.text
    assert api.blob("restart/blob", digest_of(data)).content == data


# -- clients that go away ----------------------------------------------------------------------
def test_client_disconnects_mid_chunk(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    location = api.start_upload("gone/chunk")
    head = random_bytes(100_000)
    assert api.patch(location, head, start=0).status_code == 202
    s = send_partial(shared_server, "PATCH", location, 2 * MiB, random_bytes(MiB))
    time.sleep(0.2)
    s.close()

    def settled() -> bool:
        r = api.get(location)
        return r.status_code == 204 and r.headers["Range"] == f"0-{len(head) - 1}"

    wait_until(settled, what="the half chunk to be dropped")
    tail = random_bytes(5000)
    r = api.patch(location, tail, start=len(head))
    assert r.status_code == 202
    r = api.finish(location, digest_of(head + tail))
    assert r.status_code == 201
    assert api.blob("gone/chunk", digest_of(head + tail)).content == head + tail


def test_client_disconnects_mid_monolithic_post(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(2 * MiB)
    d = digest_of(data)
    sessions_before = upload_dirs(shared_server.data_dir)
    before = blob_files(shared_server.data_dir)
    s = send_partial(shared_server, "POST", f"/v2/gone/mono/blobs/uploads/?digest={d}",
                     len(data), data[: len(data) // 2])
    wait_until(lambda: bool(upload_dirs(shared_server.data_dir) - sessions_before),
               what="the upload to start")
    s.close()
    wait_until(lambda: upload_dirs(shared_server.data_dir) == sessions_before,
               what="the abandoned upload's staged bytes to go")
    assert blob_files(shared_server.data_dir) == before
    assert_error(api.blob("gone/mono", d), 404, "BLOB_UNKNOWN")
    # and the same push, whole, works
    assert api.push_blob("gone/mono", data) == d


def test_client_disconnects_mid_final_put(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(3 * MiB)
    d = digest_of(data)
    location = api.start_upload("gone/put")
    assert api.patch(location, data[:MiB], start=0).status_code == 202
    before = blob_files(shared_server.data_dir)
    s = send_partial(shared_server, "PUT", f"{location}?digest={d}", 2 * MiB,
                     data[MiB : MiB + MiB // 2])
    time.sleep(0.2)
    s.close()
    time.sleep(0.3)
    assert blob_files(shared_server.data_dir) == before
    assert_error(api.blob("gone/put", d), 404, "BLOB_UNKNOWN")
    r = api.get(location)
    if r.status_code == 204:  # resumable: from exactly the bytes that were whole
        assert r.headers["Range"] == f"0-{MiB - 1}"
        assert api.finish(location, d, data[MiB:]).status_code == 201
    else:  # or cleanly gone
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
        assert api.push_blob("gone/put", data) == d
    assert api.blob("gone/put", d).content == data
    assert_blob_files_intact(shared_server.data_dir)


def test_kill_9_mid_upload_then_restart(server: LiveServer) -> None:
    api = Api(server)
    data = random_bytes(12 * MiB)
    d = digest_of(data)
    location = api.start_upload("crash/blob")
    uid = upload_id(location)
    assert api.patch(location, data[:MiB], start=0).status_code == 202
    staged = server.data_dir / "uploads" / uid / "data"
    s = send_partial(server, "PATCH", location, len(data) - MiB, data[MiB : 7 * MiB])
    try:
        wait_until(lambda: staged.stat().st_size > 2 * MiB, what="bytes to reach the disk")
        server.kill()
    finally:
        s.close()
    server.start()
    api = Api(server)
    assert_blob_files_intact(server.data_dir)
    assert_error(api.blob("crash/blob", d), 404, "BLOB_UNKNOWN")

    r = api.get(location)
    if r.status_code == 204:
        # resumes at the last acknowledged offset: the interrupted PATCH is all-or-nothing
        size = int(r.headers["Range"].split("-")[1]) + 1
        assert size == MiB
        assert staged.read_bytes()[:size] == data[:size]
        r = api.patch(location, data[size:], start=size)
        assert r.status_code == 202, r.text
        assert api.finish(location, d).status_code == 201
    else:
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
        assert api.push_blob("crash/blob", data) == d
    assert api.blob("crash/blob", d).content == data
    assert_blob_files_intact(server.data_dir)


def test_kill_9_during_monolithic_push(server: LiveServer) -> None:
    api = Api(server)
    data = random_bytes(8 * MiB)
    d = digest_of(data)
    keep = api.push_blob("crash/keep", random_bytes(1000))
    s = send_partial(server, "POST", f"/v2/crash/mono/blobs/uploads/?digest={d}", len(data),
                     data[: 5 * MiB])
    try:
        def staged_bytes() -> bool:
            return any(p.stat().st_size > MiB
                       for p in (server.data_dir / "uploads").glob("*/data"))

        wait_until(staged_bytes, what="bytes to reach the disk")
        server.kill()
    finally:
        s.close()
    server.start()
    api = Api(server)
    assert blob_files(server.data_dir) == {keep}
    assert_blob_files_intact(server.data_dir)
    assert_error(api.blob("crash/mono", d), 404, "BLOB_UNKNOWN")
    assert api.blob("crash/keep", keep).status_code == 200
    assert api.push_blob("crash/mono", data) == d
    assert api.blob("crash/mono", d).content == data


# -- several worker processes -------------------------------------------------------------------
def one_shot(srv: LiveServer, method: str, path: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> requests.Response:
    """A request on a connection of its own, closed after it: the kernel hands each new
    connection to whichever worker accepts first."""
    h = {"Connection": "close", "Content-Type": "application/octet-stream", **(headers or {})}
    with requests.Session() as s:
        return s.request(method, srv.url + path, data=data, headers=h, timeout=TIMEOUT)


def test_push_split_across_workers(server_factory: Callable[..., LiveServer]) -> None:
    """POST, PATCHes, status and PUT each on a new connection, so they land on different
    worker processes; each one must pick up where another left off."""
    srv = server_factory(workers=2)
    pushed = {}
    for i in range(8):
        repo = f"workers/r{i % 2}"
        data = random_bytes(300_000 + i)
        parts = [data[:100_000], data[100_000:200_000], data[200_000:]]
        r = one_shot(srv, "POST", f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202
        location = r.headers["Location"]
        offset = 0
        for part in parts[:2]:
            r = one_shot(srv, "PATCH", location, part,
                         {"Content-Range": f"{offset}-{offset + len(part) - 1}"})
            assert r.status_code == 202, r.text
            offset += len(part)
            assert r.headers["Range"] == f"0-{offset - 1}"
            status = one_shot(srv, "GET", location)
            assert status.status_code == 204
            assert status.headers["Range"] == f"0-{offset - 1}"
        r = one_shot(srv, "PUT", f"{location}?digest={digest_of(data)}", parts[2])
        assert r.status_code == 201, r.text
        pushed[digest_of(data)] = (repo, data)

    # a wrong digest is caught whichever worker hashes
    r = one_shot(srv, "POST", "/v2/workers/r0/blobs/uploads/")
    location = r.headers["Location"]
    assert one_shot(srv, "PATCH", location, b"a" * 1000).status_code == 202
    wrong = one_shot(srv, "PUT", f"{location}?digest={digest_of(b'b' * 1000)}")
    assert_error(wrong, 400, "DIGEST_INVALID")

    for d, (repo, data) in pushed.items():
        r = one_shot(srv, "GET", f"/v2/{repo}/blobs/{d}")
        assert r.status_code == 200 and r.content == data
    assert blob_files(srv.data_dir) == set(pushed)
    assert_blob_files_intact(srv.data_dir)


def test_failed_pushes_to_a_new_repository_leave_no_trace(server: LiveServer) -> None:
    """Wrong digests, cancelled and abandoned sessions: no blob, no upload, no repository."""
    api = Api(server)
    data = random_bytes(5000)
    r = api.request("POST", "/v2/ghost/mono/blobs/uploads/",
                    params={"digest": digest_of(b"other")}, data=data)
    assert_error(r, 400, "DIGEST_INVALID")
    location = api.start_upload("ghost/wrongput")
    assert api.patch(location, data, start=0).status_code == 202
    assert_error(api.finish(location, digest_of(b"other")), 400, "DIGEST_INVALID")
    location = api.start_upload("ghost/cancelled")
    assert api.request("DELETE", location).status_code == 204
    assert_error(api.put_manifest("ghost/manifest", "latest", b"{", None), 400,
                 "MANIFEST_INVALID")

    assert blob_files(server.data_dir) == set()
    assert upload_dirs(server.data_dir) == set()
    r = api.get("/v2/_catalog")
    assert r.status_code == 200 and r.json()["repositories"] == []
    for repo in ("ghost/mono", "ghost/wrongput", "ghost/cancelled", "ghost/manifest"):
        r = api.get(f"/v2/{repo}/tags/list")
        if r.status_code == 200:
            assert r.json()["tags"] == []
        else:
            assert_error(r, 404, "NAME_UNKNOWN")
    # and the first real content makes a repository appear
    api.push_blob("ghost/mono", data)
    assert api.get("/v2/_catalog").json()["repositories"] == ["ghost/mono"]


def test_chunked_session_with_sha512(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    data = random_bytes(MiB + 99)
    location = api.start_upload("up/sha512")
    assert api.patch(location, data[:MiB], start=0).status_code == 202
    wrong = digest_of(data + b"!", "sha512")
    assert_error(api.finish(location, wrong, data[MiB:]), 400, "DIGEST_INVALID")
    location = api.start_upload("up/sha512")
    assert api.patch(location, data[:MiB], start=0).status_code == 202
    d = digest_of(data, "sha512")
    r = api.finish(location, d, data[MiB:])
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert api.blob("up/sha512", d).content == data
    assert d in blob_files(shared_server.data_dir)


def test_concurrent_chunks_on_one_session(shared_server: LiveServer) -> None:
    """A second PATCH while one is still streaming must not write into the middle of it."""
    api = Api(shared_server)
    location = api.start_upload("up/concurrent")
    uid = upload_id(location)
    staged = shared_server.data_dir / "uploads" / uid / "data"
    first = random_bytes(2 * MiB)
    s = send_partial(shared_server, "PATCH", location, len(first), first[:MiB])
    try:
        wait_until(lambda: staged.stat().st_size >= MiB // 2, what="the first chunk to stream")
        r = api.patch(location, b"intruder")
        assert_error(r, 416, "BLOB_UPLOAD_INVALID")
        s.sendall(first[MiB:])
        reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
    finally:
        s.close()
    status = api.get(location)
    assert status.headers["Range"] == f"0-{len(first) - 1}"
    r = api.finish(location, digest_of(first))
    assert r.status_code == 201, r.text
    assert api.blob("up/concurrent", digest_of(first)).content == first
