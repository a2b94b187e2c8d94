"""The registry on S3: real `serve` processes on one SeaweedFS bucket and one index.

Replicas share the bucket, prefix and a SQLite index file; every request below goes to a
named replica, so a session that moves between them really does. Faults are real too:
SeaweedFS killed mid-PUT and mid-GET, a replica SIGKILLed mid-PATCH.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.contract.conftest import PostgresServer
from tests.support.clients import Clients, KiB, MiB, OciLayout, verify_layout_blobs
from tests.support.live import LiveServer, free_port
from tests.support.oci_http import Api, assert_error, digest_of, random_bytes, send_partial
from tests.support.s3_support import S3Cluster, blob_key

TIMEOUT = 60


def staged_uploads(cluster: S3Cluster) -> dict[str, int]:
    return cluster.keys("uploads/")


def wait_for(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- real clients ---------------------------------------------------------------------------
@pytest.mark.clients
def test_skopeo_and_podman_push_and_pull_through_s3(s3_cluster: S3Cluster,
                                                    tmp_path: Path) -> None:
    """skopeo pushes to one replica and pulls from the other; podman the other way round.
    The blobs are objects under blobs/sha256/ (one per digest), nothing is left staged."""
    a, b = s3_cluster.replica(), s3_cluster.replica()
    src = OciLayout(tmp_path / "src")
    img = src.add_image([300 * KiB, 9 * MiB])  # one layer spans several 8 MiB parts
    src.tag("v1", img.manifest)
    to_a, to_b = Clients(tmp_path / "ca", a), Clients(tmp_path / "cb", b)
    try:
        to_a.skopeo("copy", "--dest-tls-verify=false", src.ref("v1"),
                    to_a.docker_ref("s3/skopeo", "v1"))
        out = tmp_path / "pulled"
        to_b.skopeo("copy", "--src-tls-verify=false", to_b.docker_ref("s3/skopeo", "v1"),
                    f"oci:{out}:v1")
        pulled = verify_layout_blobs(out)
        for d in (img.manifest, *img.blobs):
            assert d.digest in pulled
            assert (out / "blobs/sha256" / d.hex).read_bytes() == \
                src.blob_path(d.digest).read_bytes()
        blobs = s3_cluster.keys("blobs/")
        for d in img.blobs:
            assert blobs[blob_key(d.digest)] == d.size
        # podman: push to b, pull from a
        name_b = to_b.image_name("s3/podman", "v1")
        to_b.podman("pull", src.ref("v1"))
        to_b.podman("tag", img.config.hex, name_b)
        to_b.podman("push", name_b)
        to_a.podman("pull", to_a.image_name("s3/podman", "v1"))
        info = to_a.podman_inspect(to_a.image_name("s3/podman", "v1"))
        assert info["Id"] == img.config.hex
        assert info["RootFS"]["Layers"] == img.diff_ids
        # the same layers were mounted/deduplicated: still one object per digest
        assert set(s3_cluster.keys("blobs/")) == set(blobs)
        assert staged_uploads(s3_cluster) == {}
    finally:
        to_a.close()
        to_b.close()


# -- one session, three replicas --------------------------------------------------------------
@pytest.mark.parametrize("index", ["sqlite", "postgresql"])
def test_chunked_push_spread_over_three_replicas(s3_cluster: S3Cluster, index: str,
                                                 request: pytest.FixtureRequest) -> None:
    if index == "postgresql":
        pg: PostgresServer = request.getfixturevalue("postgres")
        s3_cluster.database_url = pg.url(pg.create_database())
    a, b, c = (Api(s3_cluster.replica()) for _ in range(3))
    data = random_bytes(19 * MiB + 333)
    d = digest_of(data)
    location = a.start_upload("s3/chunked")  # POST on a
    cuts = [0, 6 * MiB, 6 * MiB + 10, 17 * MiB, len(data)]
    for api, start, end in zip((b, c, a), cuts, cuts[1:], strict=False):
        r = api.patch(location, data[start:end], start)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{end - 1}"
    r = c.request("GET", location)  # status on c
    assert r.status_code == 204 and r.headers["Range"] == f"0-{cuts[3] - 1}"
    r = b.finish(location, d, data[cuts[3]:])  # PUT (with the last chunk) on b
    assert r.status_code == 201, r.text
    for api in (a, b, c):
        got = api.blob("s3/chunked", d)
        assert got.status_code == 200 and got.content == data
    r = c.get(f"/v2/s3/chunked/blobs/{d}", headers={"Range": f"bytes={8 * MiB - 5}-{8 * MiB + 4}"})
    assert r.status_code == 206 and r.content == data[8 * MiB - 5:8 * MiB + 5]
    assert s3_cluster.keys("blobs/") == {blob_key(d): len(data)}
    assert staged_uploads(s3_cluster) == {}
    # a cross-repository mount on another replica: no second object
    r = a.request("POST", "/v2/s3/other/blobs/uploads/", params={"mount": d, "from": "s3/chunked"})
    assert r.status_code == 201, r.text
    assert b.blob("s3/other", d).content == data
    assert s3_cluster.keys("blobs/") == {blob_key(d): len(data)}


def test_replica_killed_mid_patch_session_goes_on_elsewhere(s3_cluster: S3Cluster) -> None:
    """SIGKILL while a PATCH is half received (one part already in S3): the acknowledged
    offset stays, the bytes of the dead PATCH never count, the session finishes on b."""
    a_server = s3_cluster.replica()
    a, b = Api(a_server), Api(s3_cluster.replica())
    data = random_bytes(30 * MiB)
    d = digest_of(data)
    location = a.start_upload("s3/killed")
    assert a.patch(location, data[: 6 * MiB], 0).status_code == 202
    sock = send_partial(a_server, "PATCH", location, 20 * MiB, data[6 * MiB: 6 * MiB + 17 * MiB])
    try:
        # the dead PATCH gets at least one part into the multipart upload before the kill
        wait_for(lambda: _parts_uploaded(s3_cluster), "a part of the dying PATCH", 30)
        a_server.kill()
    finally:
        sock.close()
    r = b.request("GET", location)
    assert r.status_code == 204 and r.headers["Range"] == f"0-{6 * MiB - 1}"
    # resending from the acknowledged offset, in two chunks, then PUT: all on b
    assert b.patch(location, data[6 * MiB: 20 * MiB], 6 * MiB).status_code == 202
    assert b.finish(location, d, data[20 * MiB:]).status_code == 201
    assert b.blob("s3/killed", d).content == data
    assert staged_uploads(s3_cluster) == {}


def _parts_uploaded(cluster: S3Cluster) -> bool:
    """A multipart upload with a part exists (SeaweedFS keeps parts under .uploads/)."""
    r = requests.get(f"{cluster.seaweed.endpoint}/functional",
                     params={"uploads": "", "prefix": cluster.prefix}, timeout=5)
    if b"<UploadId>" not in r.content:
        return False
    time.sleep(1.0)  # > one 8 MiB part on loopback
    return True


# -- SeaweedFS faults -------------------------------------------------------------------------
def test_s3_killed_mid_put_gives_a_clean_error_and_nothing_partial(
        s3_cluster: S3Cluster) -> None:
    api = Api(s3_cluster.replica())
    data = random_bytes(40 * MiB)
    d = digest_of(data)
    seaweed = s3_cluster.seaweed
    sent = threading.Event()

    def body() -> Iterator[bytes]:
        for i in range(0, len(data), MiB):
            if i == 20 * MiB:
                sent.set()
                seaweed.kill()  # SeaweedFS dies while the PUT body streams in
            yield data[i:i + MiB]

    try:
        r = api.request("POST", "/v2/s3/fault/blobs/uploads/", params={"digest": d},
                        data=body(), headers={"Content-Type": "application/octet-stream"})
    except requests.ConnectionError:
        r = None  # the server may close before the body is all sent
    assert sent.is_set()
    if r is not None:
        assert_error(r, 503, "UNKNOWN")
        assert "unavailable" in r.text
    # a request while S3 is down: a clean error too
    assert_error(api.request("POST", "/v2/s3/fault/blobs/uploads/", params={"digest": d},
                             data=b"small"), 503, "UNKNOWN")
    seaweed.start()  # same ports, same data
    assert api.head(f"/v2/s3/fault/blobs/{d}").status_code == 404
    assert blob_key(d) not in s3_cluster.keys("blobs/")
    assert api.push_blob("s3/fault", data) == d  # a retry works
    assert api.blob("s3/fault", d).content == data


def test_s3_killed_mid_get_cuts_the_body_then_errors_cleanly(s3_cluster: S3Cluster) -> None:
    server = s3_cluster.replica()
    api = Api(server)
    data = random_bytes(48 * MiB)
    d = api.push_blob("s3/get", data)
    seaweed = s3_cluster.seaweed
    received = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
        s.sendall(f"GET /v2/s3/get/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        seaweed.kill()
        try:
            while chunk := s.recv(1 << 16):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < len(data), "the body must be cut, never completed with wrong bytes"
    r = api.blob("s3/get", d)  # S3 down: a clean OCI error, not a hang or a cut
    assert_error(r, 503, "UNKNOWN")
    ready = api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["s3"] != "ok", ready.text
    seaweed.start()
    got = api.blob("s3/get", d)
    assert got.status_code == 200 and got.content == data
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["s3"] == "ok", ready.text
    assert "blobs" not in ready.json()["checks"]  # nothing of the data dir's push dirs


# -- redirect, GC, scrub -----------------------------------------------------------------------
def test_redirect_answers_307_to_a_presigned_url(s3_cluster: S3Cluster) -> None:
    s3_cluster.extra_env["STABLEMIRROR_STORAGE__S3__REDIRECT"] = "true"
    api = Api(s3_cluster.replica())
    data = random_bytes(3 * MiB)
    d = api.push_blob("s3/redirect", data)
    r = api.get(f"/v2/s3/redirect/blobs/{d}", allow_redirects=False)
    assert r.status_code == 307, r.text
    location = r.headers["Location"]
    assert location.startswith(s3_cluster.seaweed.endpoint)
    assert requests.get(location, timeout=TIMEOUT).content == data
    assert api.head(f"/v2/s3/redirect/blobs/{d}").status_code == 200  # HEAD: answered here
    assert api.blob("s3/redirect", d).content == data  # followed by requests


def run_command(cluster: S3Cluster, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stablemirror", *args, "--data-dir",
                           str(data_dir)], env={**os.environ, **cluster.env()},
                          capture_output=True, text=True, timeout=120, check=False)


def test_gc_and_scrub_on_s3(s3_cluster: S3Cluster) -> None:
    server = s3_cluster.replica()
    api = Api(server)
    _digest, manifest = api.push_image("s3/gc", "v1", layers=1, layer_size=4096)
    orphan = api.push_blob("s3/gc", random_bytes(5000))  # referenced by nothing
    abandoned = api.start_upload("s3/gc")  # a session nobody finishes
    assert api.patch(abandoned, random_bytes(1000), 0).status_code == 202
    assert any(k.startswith("uploads/") for k in s3_cluster.keys("uploads/"))
    kept_before = set(s3_cluster.keys("blobs/"))
    s3_cluster.extra_env["STABLEMIRROR_GC__UPLOAD_MAX_AGE_SECONDS"] = "0"
    r = run_command(s3_cluster, server.data_dir, "gc", "--grace", "0")
    assert r.returncode == 0, r.stderr + r.stdout
    left = set(s3_cluster.keys("blobs/"))
    assert blob_key(orphan) not in left
    assert left == kept_before - {blob_key(orphan)}
    assert s3_cluster.keys("trash/") == {}
    assert s3_cluster.keys("uploads/") == {}, "the abandoned session's objects are gone"
    assert_error(api.request("GET", abandoned), 404, "BLOB_UPLOAD_UNKNOWN")
    # scrub: corrupt a layer in the bucket behind the registry's back
    layer = json.loads(manifest)["layers"][0]["digest"]
    requests.put(s3_cluster.object_url(blob_key(layer)), data=b"x" * 4096,
                 timeout=10).raise_for_status()
    r = run_command(s3_cluster, server.data_dir, "scrub")
    assert r.returncode == 0 and f"CORRUPT {layer}: quarantined" in r.stdout, \
        r.stdout + r.stderr
    assert blob_key(layer) not in s3_cluster.keys("blobs/")
    quarantined = s3_cluster.keys("quarantine/")
    assert len(quarantined) == 1 and next(iter(quarantined)).startswith(
        "quarantine/sha256-" + layer.split(":")[1])
    assert_error(api.blob("s3/gc", layer), 404, "BLOB_UNKNOWN")


def test_s3_metrics_count_requests(s3_cluster: S3Cluster) -> None:
    server: LiveServer = s3_cluster.replica()
    api = Api(server)
    d = api.push_blob("s3/metrics", random_bytes(1000))
    assert api.blob("s3/metrics", d).status_code == 200
    text = api.get("/metrics").text
    gets = [line for line in text.splitlines()
            if line.startswith('stablemirror_s3_requests_total{operation="get"}')]
    assert gets and float(gets[0].split()[-1]) >= 1, gets


# -- settings mistakes: one line each, never a traceback, never a key ----------------------------
@pytest.mark.parametrize(("env", "named", "code"), [
    ({"STABLEMIRROR_STORAGE__BACKEND": "tape"}, ["STABLEMIRROR_STORAGE__BACKEND", "tape"], 2),
    ({"STABLEMIRROR_STORAGE__BACKEND": "s3"}, ["storage.s3.bucket is not set"], 2),
    ({"STABLEMIRROR_STORAGE__BACKEND": "s3", "STABLEMIRROR_STORAGE__S3__BUCKET": "b",
      "STABLEMIRROR_STORAGE__S3__ENDPOINT": "127.0.0.1:9"}, ["expected http(s)://"], 2),
    ({"STABLEMIRROR_STORAGE__BACKEND": "s3", "STABLEMIRROR_STORAGE__S3__BUCKET": "b",
      "STABLEMIRROR_STORAGE__S3__ACCESS_KEY": "AKIDSECRETVALUE"}, ["give both"], 2),
    ({"STABLEMIRROR_STORAGE__BACKEND": "s3", "STABLEMIRROR_STORAGE__S3__BUCKET": "b",
      "STABLEMIRROR_STORAGE__S3__ENDPOINT": "http://127.0.0.1:9",
      "STABLEMIRROR_STORAGE__S3__ACCESS_KEY": "AKIDSECRETVALUE",
      "STABLEMIRROR_STORAGE__S3__SECRET_KEY": "SUPERSECRETVALUE"},
     ["storage.s3.endpoint http://127.0.0.1:9, bucket 'b': unusable"], 1),
], ids=["bad-backend", "no-bucket", "endpoint-no-scheme", "half-keys", "unreachable"])
def test_storage_mistakes_are_one_line(tmp_path: Path, env: dict[str, str], named: list[str],
                                       code: int) -> None:
    r = subprocess.run([sys.executable, "-m", "stablemirror", "serve", "--listen",
                        f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d")],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
                       check=False)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stablemirror: error: "), r.stderr
    for value in named:
        assert value in lines[0], lines[0]
    assert "SECRETVALUE" not in r.stderr + r.stdout
    assert r.returncode == code, (r.returncode, lines)


def test_missing_bucket_is_one_line_and_create_bucket_makes_it(s3_cluster: S3Cluster,
                                                               tmp_path: Path) -> None:
    bucket = f"absent-{os.getpid()}-{int(time.time())}"
    env = {**s3_cluster.env(), "STABLEMIRROR_STORAGE__S3__BUCKET": bucket,
           "STABLEMIRROR_STORAGE__S3__CREATE_BUCKET": "false"}
    (tmp_path / "d").mkdir()
    r = subprocess.run([sys.executable, "-m", "stablemirror", "serve", "--listen",
                        f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d")],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
                       check=False)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"storage.s3.bucket '{bucket}': no such bucket" in lines[0], \
        r.stderr
    assert r.returncode == 1
    s3_cluster.extra_env.update({"STABLEMIRROR_STORAGE__S3__BUCKET": bucket})
    api = Api(s3_cluster.replica())  # create_bucket: true (the cluster's default)
    d = api.push_blob("s3/new-bucket", b"first blob")
    assert api.blob("s3/new-bucket", d).content == b"first blob"
    assert requests.head(f"{s3_cluster.seaweed.endpoint}/{bucket}", timeout=10).ok


# -- a pull-through mirror on S3 ----------------------------------------------------------------
def test_mirror_on_s3_fetches_once_publishes_to_the_bucket(s3_cluster: S3Cluster,
                                                           server: LiveServer) -> None:
    """An edge on S3 in front of a hosted upstream: concurrent first pulls share one
    upstream transfer (staged in the edge's local .part), the verified blob is published
    to the bucket, later pulls (on another replica too) come from S3."""
    upstream = Api(server)
    manifest_digest, manifest = upstream.push_image("models/m", "v1", layers=2,
                                                    layer_size=9 * MiB)
    layers = [layer["digest"] for layer in json.loads(manifest)["layers"]]
    edge = s3_cluster.replica("--upstream", server.url)
    other = s3_cluster.replica("--upstream", server.url)
    e = Api(edge)
    assert e.manifest("models/m", "v1").status_code == 200
    want = {d: upstream.blob("models/m", d).content for d in layers}
    results: dict[int, bytes] = {}

    def pull(i: int, d: str) -> None:
        results[i] = requests.get(f"{edge.url}/v2/models/m/blobs/{d}", timeout=TIMEOUT).content

    threads = [threading.Thread(target=pull, args=(i, layers[0])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert all(results[i] == want[layers[0]] for i in range(4))
    wait_for(lambda: blob_key(layers[0]) in s3_cluster.keys("blobs/"), "the publish to S3")
    assert s3_cluster.keys("blobs/")[blob_key(layers[0])] == 9 * MiB
    # from S3 now: the other replica serves it with the upstream stopped
    server.stop()
    got = Api(other).blob("models/m", layers[0])
    assert got.status_code == 200 and got.content == want[layers[0]]
    server.start()
    assert e.blob("models/m", layers[1]).content == want[layers[1]]  # a second layer, once
    wait_for(lambda: blob_key(layers[1]) in s3_cluster.keys("blobs/"), "the second publish")
    assert manifest_digest
    for log in (edge.log(), other.log()):
        assert "Traceback" not in log and "aborting blob response" not in log, log[-3000:]
    assert not list((edge.data_dir / "fetch").glob("*.part")), "staged parts are consumed"


def test_signed_requests_and_keys_never_logged(s3_cluster: S3Cluster) -> None:
    """With keys (SeaweedFS without IAM accepts any signature) and debug logs: pushes and
    pulls work, and neither key appears in the server's log."""
    s3_cluster.extra_env.update({"STABLEMIRROR_STORAGE__S3__ACCESS_KEY": "AKIDLOGCHECK1234",
                                 "STABLEMIRROR_STORAGE__S3__SECRET_KEY": "s3cr3t-never-logged",
                                 "STABLEMIRROR_LOG_LEVEL": "debug"})
    server = s3_cluster.replica()
    api = Api(server)
    d = api.push_blob("s3/keys", random_bytes(6 * MiB))
    assert len(api.blob("s3/keys", d).content) == 6 * MiB
    log = server.log()
    assert "DEBUG" in log or "debug" in log.lower()
    assert "AKIDLOGCHECK1234" not in log and "s3cr3t-never-logged" not in log
