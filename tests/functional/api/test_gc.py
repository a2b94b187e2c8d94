"""`stablemirror gc` run against a live server's data directory while it serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.support.live import LiveServer
from tests.support.oci_http import (
    OCI_MANIFEST,
    Api,
    MiB,
    assert_blob_files_intact,
    assert_error,
    blob_files,
    digest_of,
    random_bytes,
    upload_dirs,
)


def run_gc(data_dir: Path, *args: str) -> dict[str, int]:
    r = subprocess.run(
        [sys.executable, "-m", "stablemirror", "gc", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = {}
    # A dry run words its rows as what a real run would do.
    dry = {"blobs deleted": "would delete: blobs",
           "orphan files deleted": "would delete: orphan files",
           "stale uploads removed": "would remove: stale uploads",
           "bytes freed": "would free: bytes"}
    for label in ("blobs deleted", "orphan files deleted", "stale uploads removed",
                  "bytes freed"):
        shown = dry[label] if "--dry-run" in args else label
        m = re.search(rf"{shown}\W+([\d,]+)", r.stdout)
        assert m is not None, f"{label!r} missing from the report:\n{r.stdout}"
        report[label] = int(m.group(1).replace(",", ""))
    return report


def test_gc_while_serving(server: LiveServer) -> None:
    api = Api(server)
    # referenced: an image
    image, image_raw = api.push_image("gc/app", "v1", layers=2)
    referenced = blob_files(server.data_dir)
    # unreferenced: a lone blob, and the exclusive layer of a deleted manifest
    lone = random_bytes(300_000)
    lone_d = api.push_blob("gc/app", lone)
    old, old_raw = api.push_image("gc/old", "v1", layers=1, layer_size=5000)
    old_blobs = blob_files(server.data_dir) - referenced - {lone_d}
    assert api.request("DELETE", f"/v2/gc/old/manifests/{old}").status_code == 202
    # in flight: an upload session with bytes in it
    location = api.start_upload("gc/inflight")
    pending = random_bytes(2 * MiB)
    assert api.patch(location, pending[:MiB], start=0).status_code == 202
    sessions = upload_dirs(server.data_dir)
    assert len(sessions) == 1

    time.sleep(0.05)  # every row is now strictly older than "now" in the GC's clock
    report = run_gc(server.data_dir, "--grace", "0")

    gone = {lone_d} | old_blobs
    assert blob_files(server.data_dir) == referenced
    assert report["blobs deleted"] == len(gone)
    assert report["bytes freed"] == len(lone) + _sizes(old_raw)
    assert report["stale uploads removed"] == 0

    assert_error(api.blob("gc/app", lone_d), 404, "BLOB_UNKNOWN")
    got = api.manifest("gc/app", "v1")
    assert got.status_code == 200 and got.content == image_raw
    assert got.headers["Docker-Content-Digest"] == image
    for layer in _layer_digests(image_raw):
        assert api.blob("gc/app", layer).status_code == 200

    # the in-flight upload is untouched and completes
    assert upload_dirs(server.data_dir) == sessions
    status = api.get(location)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{MiB - 1}"
    assert api.patch(location, pending[MiB:], start=MiB).status_code == 202
    assert api.finish(location, digest_of(pending)).status_code == 201
    assert api.blob("gc/inflight", digest_of(pending)).content == pending

    # collected content can be pushed again
    assert api.push_blob("gc/app", lone) == lone_d
    assert api.blob("gc/app", lone_d).content == lone
    assert_blob_files_intact(server.data_dir)
    # a second run finds nothing more to free except what became unreferenced since
    again = run_gc(server.data_dir, "--grace", "0")
    assert again["blobs deleted"] == 2  # the re-pushed lone blob and the finished upload
    assert again["bytes freed"] == len(lone) + len(pending)


def test_gc_grace_period(server: LiveServer) -> None:
    """A blob pushed within the grace period survives; an older unreferenced one goes.
    (The gc process takes ~2 s to start, more on a loaded machine: the fresh blob must
    still be younger than the grace when gc looks, hence the generous spacing.)"""
    api = Api(server)
    old = random_bytes(10_000)
    old_d = api.push_blob("gc/grace", old)
    time.sleep(8)
    fresh = random_bytes(20_000)
    fresh_d = api.push_blob("gc/grace", fresh)

    report = run_gc(server.data_dir, "--grace", "6")
    assert report["blobs deleted"] == 1
    assert report["bytes freed"] == len(old)
    assert blob_files(server.data_dir) == {fresh_d}
    assert api.blob("gc/grace", fresh_d).content == fresh
    assert_error(api.blob("gc/grace", old_d), 404, "BLOB_UNKNOWN")

    # everything is within a long grace period: nothing goes
    report = run_gc(server.data_dir, "--grace", "3600")
    assert report["blobs deleted"] == 0 and report["bytes freed"] == 0
    # a dry run reports what it would free and deletes nothing
    dry = run_gc(server.data_dir, "--grace", "0", "--dry-run")
    assert dry["blobs deleted"] == 1 and dry["bytes freed"] == len(fresh)
    assert blob_files(server.data_dir) == {fresh_d}
    assert api.blob("gc/grace", fresh_d).content == fresh


def test_gc_keeps_blobs_of_a_manifest_in_another_repository(server: LiveServer) -> None:
    api = Api(server)
    d, raw = api.push_image("gc/one", "v1")
    for layer in [*_layer_digests(raw), _config_digest(raw)]:
        r = api.request("POST", "/v2/gc/two/blobs/uploads/", params={"mount": layer,
                                                                    "from": "gc/one"})
        assert r.status_code == 201
    assert api.put_manifest("gc/two", "v1", raw, OCI_MANIFEST).status_code == 201
    assert api.request("DELETE", f"/v2/gc/one/manifests/{d}").status_code == 202
    before = blob_files(server.data_dir)
    time.sleep(0.05)
    report = run_gc(server.data_dir, "--grace", "0")
    assert report["blobs deleted"] == 0
    assert blob_files(server.data_dir) == before
    assert api.manifest("gc/two", "v1").content == raw


def _layer_digests(raw: bytes) -> list[str]:
    return [layer["digest"] for layer in json.loads(raw)["layers"]]


def _config_digest(raw: bytes) -> str:
    return str(json.loads(raw)["config"]["digest"])


def _sizes(raw: bytes) -> int:
    doc = json.loads(raw)
    return int(doc["config"]["size"]) + sum(int(x["size"]) for x in doc["layers"])
