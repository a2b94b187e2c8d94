"""32 concurrent cold pulls of one 1 GiB blob through a two-worker mirror.

The upstream (Debian's docker-registry) must send the blob once: the FaultProxy in front
of it counts the bytes. Clients are curl processes piping into `openssl dgst -sha256`, so
that hashing 32 GiB happens outside this process (and in C).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    MiB,
    assert_blob_files_intact,
    published_blobs,
    push_random_blob_streamed,
    remove_tree,
    running_reference,
)

ServerFactory = Callable[..., LiveServer]
GiB = 1024 * MiB
CLIENTS = 32


@pytest.mark.slow
def test_32_cold_pulls_of_1gib_blob_fetch_upstream_once(server_factory: ServerFactory,
                                                        tmp_path: Path) -> None:
    upstream_dir = tmp_path / "upstream-data"
    mirror = None
    try:
        with running_reference(upstream_dir) as origin, \
                FaultProxy(origin.host, "upstream") as proxy:
            t0 = time.monotonic()
            digest = push_random_blob_streamed(origin.url, "big/model", GiB)
            pushed = time.monotonic() - t0
            mirror = server_factory("--upstream", proxy.url, workers=2)
            url = f"{mirror.url}/v2/big/model/blobs/{digest}"
            script = ("set -o pipefail; curl -sS --fail --max-time 900 "
                      "-w '%{stderr}%{time_starttransfer} %{size_download}\\n' "
                      f"'{url}' | openssl dgst -sha256 -r")
            started = time.monotonic()
            procs = [subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
                     for _ in range(CLIENTS)]
            results = []
            for p in procs:
                try:
                    out, err = p.communicate(timeout=900)
                except subprocess.TimeoutExpired:
                    for q in procs:
                        q.kill()
                    raise
                results.append((p.returncode, out.split(" ")[0].strip(), err.strip()))
            elapsed = time.monotonic() - started

            summary = f"{proxy.summary()}\n{mirror.log()[-4000:]}"
            bad = [r for r in results if r[0] != 0 or "sha256:" + r[1] != digest]
            assert not bad, f"{len(bad)} clients failed: {bad[:5]}\n{summary}"
            ttfb = sorted(float(r[2].split()[0]) for r in results)
            sizes = {int(r[2].split()[1]) for r in results}
            assert sizes == {GiB}, sizes
            upstream_bytes = proxy.body_bytes(digest)
            assert upstream_bytes < 1.1 * GiB, summary
            assert proxy.count(digest, "GET") <= 2, summary
            assert digest in published_blobs(mirror.data_dir, {digest})
            assert assert_blob_files_intact(mirror.data_dir) == 1
            print(f"\n1GiB x{CLIENTS}: push {pushed:.1f}s; all clients done in {elapsed:.1f}s "
                  f"({CLIENTS * GiB / elapsed / MiB:.0f} MiB/s served); upstream sent "
                  f"{upstream_bytes} bytes in {proxy.count(digest, 'GET')} request(s) "
                  f"({upstream_bytes / GiB:.4f} GiB); time to first byte "
                  f"min {ttfb[0]:.3f}s median {ttfb[len(ttfb) // 2]:.3f}s max {ttfb[-1]:.3f}s")
    finally:
        if mirror is not None:
            mirror.stop()
            remove_tree(mirror.data_dir)
        remove_tree(upstream_dir)
