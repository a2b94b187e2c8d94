"""A full disk: a clear 507 with the OCI error body, nothing partial, and recovery.

The data directory is a real 20 MiB filesystem: a tmpfs mounted over it (we run as root),
else a loop-mounted ext4 image. Only where the machine refuses both does the server run
with ENOSPC injected into the blob store's writes (see `_inject_enospc`), and the test
says so in its failure messages.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.live import LiveServer
from tests.support.oci_http import (
    TIMEOUT,
    Api,
    MiB,
    assert_blob_files_intact,
    blob_files,
    digest_of,
    error_codes,
    random_bytes,
    upload_dirs,
    wait_until,
)

SIZE_MIB = 20


def _run(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=60, check=False).returncode == 0


def _unmount(d: Path) -> None:
    if not _run(["umount", str(d)]):
        _run(["umount", "-l", str(d)])


_SITECUSTOMIZE = """
import errno, os
import stablemirror.store.filesystem as fs
_limit = int(os.environ["STABLEMIRROR_TEST_ENOSPC_BYTES"])
_orig = fs._write_and_hash
def _limited(f, chunk, state):
    used = sum(p.stat().st_size for p in fs.Path(os.environ["STABLEMIRROR_TEST_ROOT"]).rglob("*")
               if p.is_file())
    if used + len(chunk) > _limit:
        raise OSError(errno.ENOSPC, "No space left on device (injected)")
    _orig(f, chunk, state)
fs._write_and_hash = _limited
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, str]]]:
    """(data dir, how it is limited, extra server environment)."""
    d = tmp_path / "data"
    d.mkdir()
    if _run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m,mode=0755", "tmpfs", str(d)]):
        yield d, "tmpfs", {}
        _unmount(d)
        return
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(SIZE_MIB * MiB)
    if _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)]) and _run(
        ["mount", "-o", "loop", str(image), str(d)]
    ):
        yield d, "loop-mounted ext4", {}
        _unmount(d)
        return
    shim = tmp_path / "enospc"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    yield d, "ENOSPC injected (mounting was refused)", {
        "PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "STABLEMIRROR_TEST_ENOSPC_BYTES": str(SIZE_MIB * MiB),
        "STABLEMIRROR_TEST_ROOT": str(d),
    }


def assert_storage_full(r: requests.Response, how: str) -> None:
    assert r.status_code == 507, (how, r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json")
    codes = error_codes(r)
    assert codes, r.text
    assert "full" in r.text.lower()


def post_blob(srv: LiveServer, repo: str, data: bytes) -> requests.Response:
    return requests.post(f"{srv.url}/v2/{repo}/blobs/uploads/",
                         params={"digest": digest_of(data)}, data=data, timeout=TIMEOUT,
                         headers={"Content-Type": "application/octet-stream"})


def fill(d: Path) -> Path:
    """Fill the filesystem to the last byte with one file (bounded: the disk is small)."""
    filler = d / "filler"
    block = b"\0" * (256 * 1024)
    with filler.open("wb") as f:
        for _ in range(4 * SIZE_MIB * 4):
            try:
                f.write(block)
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    return filler


def test_full_disk(small_disk: tuple[Path, str, dict[str, str]],
                   server_factory: Callable[..., LiveServer]) -> None:
    d, how, env = small_disk
    srv = server_factory(data_dir=d, env=env)
    try:
        api = Api(srv)
        kept_data = random_bytes(100_000)
        kept = api.push_blob("disk/ok", kept_data)

        # 1. a 40 MiB monolithic push into 20 MiB
        big = random_bytes(40 * MiB)
        r = post_blob(srv, "disk/big", big)
        assert_storage_full(r, how)
        wait_until(lambda: upload_dirs(d) == set(), what="staged bytes to be dropped")
        assert blob_files(d) == {kept}
        assert api.blob("disk/big", digest_of(big)).status_code == 404
        assert_blob_files_intact(d)

        # the space came back: the registry works right away
        small = random_bytes(MiB)
        assert post_blob(srv, "disk/after", small).status_code == 201

        # 2. the same blob as a chunked session: the chunk fails, the session stays as it was
        location = api.start_upload("disk/chunked")
        first = random_bytes(MiB)
        assert api.patch(location, first, start=0).status_code == 202
        r = api.patch(location, big[: 30 * MiB], start=MiB)
        assert_storage_full(r, how)
        status = api.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == f"0-{MiB - 1}"
        assert api.finish(location, digest_of(first)).status_code == 201
        assert api.blob("disk/chunked", digest_of(first)).content == first

        # 3. a disk filled by something else: a push fails cleanly, then works once freed
        filler = fill(d)
        try:
            data = random_bytes(2 * MiB)
            r = post_blob(srv, "disk/filled", data)
            assert_storage_full(r, how)  # whether the bytes or the index hit the wall
            r = api.request("POST", "/v2/disk/filled/blobs/uploads/")
            assert_storage_full(r, how)
            assert api.blob("disk/filled", digest_of(data)).status_code == 404
        finally:
            filler.unlink()
        wait_until(lambda: upload_dirs(d) == set(), what="staged bytes to be dropped")
        assert digest_of(data) not in blob_files(d)
        assert post_blob(srv, "disk/filled", data).status_code == 201
        assert api.blob("disk/filled", digest_of(data)).content == data
        assert api.blob("disk/ok", kept).content == kept_data
        _, body = api.push_image("disk/image", "latest")
        assert api.manifest("disk/image", "latest").content == body
        assert_blob_files_intact(d)
        assert "Traceback" not in srv.log() or how.startswith("ENOSPC"), srv.log()[-3000:]
    finally:
        srv.stop()


def test_small_disk_is_really_small(small_disk: tuple[Path, str, dict[str, str]]) -> None:
    """The fixture gives what it promises: a filesystem of SIZE_MIB (or the injected limit)."""
    d, how, env = small_disk
    if how.startswith("ENOSPC"):
        assert int(env["STABLEMIRROR_TEST_ENOSPC_BYTES"]) == SIZE_MIB * MiB
        return
    st = os.statvfs(d)
    assert st.f_blocks * st.f_frsize <= (SIZE_MIB + 1) * MiB, how
    assert os.path.ismount(d), how


def test_full_disk_never_stops_reads(small_disk: tuple[Path, str, dict[str, str]],
                                     server_factory: Callable[..., LiveServer]) -> None:
    """A disk filled to the last byte: every read keeps working for many requests (each new
    series a scrape must merge is a page of a memory-mapped file somewhere), writes answer
    507, and no worker dies (a page fault on a full tmpfs is SIGBUS, not an error)."""
    d, how, env = small_disk
    srv = server_factory(data_dir=d, env=env, workers=2)
    try:
        api = Api(srv)
        blob_data = random_bytes(50_000)
        blob = api.push_blob("full/reads", blob_data)
        manifest_digest, manifest_body = api.push_image("full/image", "v1")
        filler = fill(d)
        try:
            for i in range(150):  # bounded; every namespace and status is a new series
                assert api.blob("full/reads", blob).content == blob_data, i
                assert api.manifest("full/image", "v1").content == manifest_body, i
                assert api.manifest("full/image", manifest_digest).status_code == 200, i
                assert api.blob(f"ns{i}/missing", digest_of(b"%d" % i)).status_code == 404
                assert api.get(f"/v2/ns{i}/tags/list").status_code in (200, 404)
            r = post_blob(srv, "full/push", random_bytes(MiB))
            assert_storage_full(r, how)
            metrics = api.get("/metrics")
            assert metrics.status_code == 200
            assert "stablemirror_pulls_total" in metrics.text
            assert 'namespace="ns90"' in metrics.text  # within the namespace bound (100)
            assert api.get("/healthz").status_code == 200
        finally:
            filler.unlink()
        assert srv.proc is not None and srv.proc.poll() is None, srv.log()[-3000:]
        log = srv.log()
        assert "Traceback" not in log and "failed" not in log, log[-3000:]
        assert api.blob("full/reads", blob).content == blob_data
    finally:
        srv.stop()
