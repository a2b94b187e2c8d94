"""Upstreams dying under real clients: skopeo and podman pulling through the mirror.

* The primary upstream is SIGKILLed while 20 skopeo pulls run: the backup (same content)
  takes over, transfers in flight resume there with Range, and no pull fails.
* Every upstream down: what was pulled before still pulls with podman (the manifest marked
  stale), what never was gets a clear 503 UNAVAILABLE and podman fails saying so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.clients import Clients, layout_ref_descriptor, verify_layout_blobs
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    Image,
    MiB,
    assert_blob_files_intact,
    error_codes,
    get_manifest,
    group,
    layout_image,
    logs,
    namespace,
    push_image,
    running_reference,
    upstream,
    write_config,
)

pytestmark = pytest.mark.clients
ServerFactory = Callable[..., LiveServer]
PULLS = 20


def test_kill_primary_during_20_concurrent_pulls(server_factory: ServerFactory,
                                                 tmp_path: Path) -> None:
    primary_origin = server_factory()
    with running_reference(tmp_path / "backup-data") as backup_origin, \
            FaultProxy(primary_origin.host, "primary") as primary, \
            FaultProxy(backup_origin.host, "backup") as backup:
        # gzip layers: skopeo would recompress tar ones into new digests for oci:
        images: list[Image] = [
            layout_image(tmp_path / f"layout{i}", f"kill/app{i}", "v1", (256 * 1024, 2 * MiB),
                         compresslevel=0)[0]
            for i in range(PULLS)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda a: push_image(*a),
                          [(o.url, img) for img in images
                           for o in (primary_origin, backup_origin)]))
        total = sum(img.size for img in images)
        # throttled, so that many transfers are in flight when the primary dies
        primary.set("pass", rate=MiB)
        mirror = server_factory("--upstream", primary.url, "--upstream", backup.url)
        clients = Clients(tmp_path / "skopeo", mirror)
        results: dict[int, tuple[int, str, float]] = {}
        lock = threading.Lock()
        started = time.monotonic()

        def pull(i: int) -> None:
            dest = tmp_path / f"pulled{i}"
            p = clients.skopeo("copy", "--src-tls-verify=false",
                               clients.docker_ref(images[i].repo, "v1"), f"oci:{dest}:v1",
                               check=False, timeout=180)
            with lock:
                results[i] = (p.returncode, p.stderr[-2000:], time.monotonic() - started)

        threads = [threading.Thread(target=pull, args=(i,)) for i in range(PULLS)]
        try:
            for t in threads:
                t.start()
            primary.wait_for(lambda p: p.body_bytes("/blobs/") >= 8 * MiB, timeout=60)
            primary_origin.kill()
            # The kernel still delivers what the dead process had already written to its
            # sockets (a whole small blob fits in loopback buffers); a dead host delivers
            # nothing more: drop the primary's connections mid-body and refuse new ones.
            primary.set("refuse")
            killed_at = time.monotonic() - started
            for t in threads:
                t.join(200)
        finally:
            clients.close()
        summary = (f"killed at {killed_at:.1f}s\n{primary.summary(60)}\n"
                   f"{backup.summary(60)}\n{mirror.log()[-4000:]}")
        failed = {i: r for i, r in results.items() if r[0] != 0}
        assert len(results) == PULLS and not failed, f"failed pulls: {failed}\n{summary}"

        for i, img in enumerate(images):
            root = tmp_path / f"pulled{i}"
            assert layout_ref_descriptor(root, "v1")["digest"] == img.digest
            blobs = verify_layout_blobs(root)
            for digest, data in img.blobs.items():
                assert blobs.get(digest) == len(data), f"pull {i}: {digest} missing"
                assert (root / "blobs" / "sha256" / digest[7:]).read_bytes() == data
        # the kill happened mid-run, the backup took over, and resumed what was in flight
        from_primary = primary.body_bytes("/blobs/")
        from_backup = backup.body_bytes("/blobs/")
        assert from_primary < total and from_backup > 0, summary
        resumed = [e for e in backup.requests("/blobs/", "GET") if "range" in e.headers]
        gaps = []  # (bytes the primary sent, where the backup resumed) per resumed blob
        for e in resumed:
            digest = e.path.rsplit("/", 1)[1]
            gaps.append((primary.body_bytes(digest),
                         int(e.headers["range"].removeprefix("bytes=").rstrip("-"))))
        summary += f"\nresumes (primary sent, resumed at): {gaps}"
        assert resumed, "no transfer was resumed on the backup\n" + summary
        # one upstream transfer per blob; a resume repeats at most what the mirror's HTTP
        # client had buffered when the connection broke (up to one 256 KiB proxy write)
        blob_bytes = sum(len(d) for img in images for d in img.blobs.values())
        overlap = from_primary + from_backup - blob_bytes
        assert 0 <= overlap <= 512 * 1024 * len(resumed), summary
        assert all(0 <= sent - at <= 512 * 1024 for sent, at in gaps), summary
        assert_blob_files_intact(mirror.data_dir)
        print(f"\nkill-primary: killed at {killed_at:.2f}s; blob bytes {blob_bytes}; "
              f"from primary {from_primary}, from backup {from_backup} "
              f"({len(resumed)} Range resumes: {gaps}); last pull done at "
              f"{max(r[2] for r in results.values()):.2f}s")


def test_all_upstreams_down_cached_pulls_uncached_fails(server_factory: ServerFactory,
                                                        tmp_path: Path) -> None:
    hosted = server_factory()
    with running_reference(tmp_path / "ref-data") as ref:
        cached, built = layout_image(tmp_path / "layout-a", "down/cached", "v1",
                                     (128 * 1024, 64 * 1024))
        uncached, _ = layout_image(tmp_path / "layout-b", "down/uncached", "v1")
        for origin in (ref, hosted):
            push_image(origin.url, cached)
            push_image(origin.url, uncached)
        cfg = write_config(tmp_path / "down.yml",
                           {"main": group(upstream(ref.url), upstream(hosted.url, backup=True))},
                           [namespace(tag_ttl=1)], node_id="down-mirror")
        mirror = server_factory("--config", str(cfg))
        log = logs(mirror)
        clients = Clients(tmp_path / "podman", mirror)
        try:
            image = clients.image_name("down/cached", "v1")
            clients.podman("pull", image)
            assert clients.podman_inspect(image)["Digest"] == cached.digest
            clients.podman("rmi", image)

            ref.stop()
            hosted.stop()
            time.sleep(1.2)  # past tag_ttl: the tag now needs an upstream that is gone

            t0 = time.monotonic()
            clients.podman("pull", image, timeout=60)
            podman_cached = time.monotonic() - t0
            info = clients.podman_inspect(image)
            assert info["Digest"] == cached.digest, clients.fail(str(info["Digest"]))
            assert info["RootFS"]["Layers"] == built.diff_ids, clients.fail("diff_ids")
            r = get_manifest(mirror.url, "down/cached", "v1")
            assert r.status_code == 200 and r.content == cached.manifest, log()
            assert r.headers.get("X-Stablemirror-Cache") == "stale", r.headers
            assert r.headers.get("Warning", "").startswith("110 "), r.headers
            r = get_manifest(mirror.url, "down/cached", cached.digest)
            assert r.status_code == 200 and r.content == cached.manifest
            assert "X-Stablemirror-Cache" not in r.headers, "by digest is never stale"

            t0 = time.monotonic()
            r = get_manifest(mirror.url, "down/uncached", "v1")
            http_uncached = time.monotonic() - t0
            assert r.status_code == 503, (r.status_code, r.text, log())
            assert r.headers["Content-Type"].startswith("application/json")
            assert error_codes(r) == ["UNAVAILABLE"], r.text
            detail = r.json()["errors"][0]
            assert detail["message"], r.text

            t0 = time.monotonic()
            p = clients.podman("pull", clients.image_name("down/uncached", "v1"),
                               check=False, timeout=120)
            podman_uncached = time.monotonic() - t0
            assert p.returncode != 0, clients.fail("podman pulled an image nobody has")
            err = p.stderr.lower()
            assert "503" in err or "unavailable" in err, clients.fail(p.stderr)
            assert http_uncached < 5, f"{http_uncached:.1f}s"
            print(f"\nall-down: cached podman pull {podman_cached:.2f}s, uncached HTTP "
                  f"{http_uncached:.3f}s, uncached podman {podman_uncached:.2f}s; "
                  f"podman said: {p.stderr.strip().splitlines()[-1]}")
        finally:
            clients.close()
        assert_blob_files_intact(mirror.data_dir)
