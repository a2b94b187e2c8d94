"""Warm pulls and concurrent cold pulls: a stablemirror mirror and its peers (docker-registry
in proxy mode, nginx proxy_cache), each behind its own counting proxy, in front of one
upstream."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from harness.common import REF, SM, BenchError, MiB, log
from harness.data import Blob
from harness.nginx import NGINX, nginx_proxy_cache_server
from harness.procfs import tree_cpu_seconds
from harness.proxies import CountProxy, blob_gets, settle_counter
from harness.servers import Server, docker_registry_blob_path, docker_registry_server
from harness.transfers import get_blob_curl, push_monolithic, verify_blob_get

from mirror_bench.bench import Bench, ServerSet
from mirror_bench.clients import concurrent_pulls, warm_up
from mirror_bench.targets import MIRROR_LABEL, MIRRORS, REPO


def start_mirrors(b: Bench, ss: ServerSet, up: Server
                  ) -> tuple[dict[str, Server], dict[str, CountProxy]]:
    """Each mirror behind its own counting proxy to `up`."""
    counters = {name: ss.proxy(f"count-{name}", up.port) for name in MIRRORS}
    # a cap, never reached: room for every blob of the run
    cache_mib = max(4096, 64 * b.args.size_mib)
    mirrors = {
        SM: ss.start(b.sm_server("sm-mirror", upstream=counters[SM].url)),
        REF: ss.start(docker_registry_server(b.work, "ref-proxy", proxy=counters[REF].url)),
        NGINX: ss.start(nginx_proxy_cache_server(b.work, "nginx-cache", counters[NGINX].url,
                                                 b.args.workers, cache_mib)),
    }
    return mirrors, counters


def run_proxy_phases(b: Bench) -> None:
    """Warm pulls and concurrent cold pulls: a stablemirror mirror and its peers, each
    behind its own counting proxy, in front of one upstream."""
    args = b.args
    kind = args.proxy_upstream
    ss = ServerSet(b)
    b.data["proxy_upstream"] = kind
    b.data["client_verify"] = args.client_verify
    try:
        up = ss.start(b.upstream_server(kind, "proxied-upstream"))
        mirrors, counters = start_mirrors(b, ss, up)
        warm_up(up.port, [m.port for m in mirrors.values()])
        order = list(MIRRORS)
        conc: dict[str, Any] = b.data.setdefault("concurrent", {})

        def cold_concurrent(n: int, blob: Blob, rnd: int) -> dict[str, Any]:
            row: dict[str, Any] = {}
            for name in order[rnd % len(order):] + order[:rnd % len(order)]:
                def prep(attempt: int, name: str = name) -> Blob:
                    if attempt == 0:
                        counters[name].reset()
                        return blob
                    # a repeat: this mirror has seen `blob`; let a background fetch of the
                    # discarded attempt finish before counting again
                    settle_counter(counters[name], quiet_s=2.0, limit_s=b.xfer_timeout)
                    fresh = b.pool.take("proxied")
                    push_monolithic(up.port, REPO, fresh, b.xfer_timeout)
                    counters[name].reset()
                    return fresh

                def go(bl: Blob, name: str = name) -> dict[str, Any]:
                    cpu0 = tree_cpu_seconds(mirrors[name].pid)
                    res = concurrent_pulls(mirrors[name].port, bl, n, b.xfer_timeout,
                                           args.client_verify)
                    res.update(blob=bl, cpu0=cpu0)
                    return res

                res, win, noisy = b.measure(f"concurrent-{n}", f"{n} clients via {name}",
                                            ss.pids, prep, go)
                bl, cpu0 = res.pop("blob"), res.pop("cpu0")
                # docker-registry keeps fetching in the background (its local copy):
                # wait for the upstream bytes to stop moving before reading them
                st = settle_counter(counters[name], quiet_s=2.0, limit_s=b.xfer_timeout)
                # CPU of the pull and of whatever the mirror still did for it afterwards
                res["mirror_cpu_settled"] = tree_cpu_seconds(mirrors[name].pid) - cpu0
                gets = blob_gets(st, bl.digest)
                res.update({
                    "upstream_bytes": st["down"],
                    "upstream_ratio": st["down"] / bl.size,
                    "upstream_blob_gets": len(gets),
                    "upstream_ranges": sorted({g[2] for g in gets if g[2]}),
                    "upstream_requests": len(st["requests"]),
                    "other_load": win.other,
                    "noisy": noisy,
                    "mirror_cpu": win.cpu.get(mirrors[name].name, 0.0),
                    "upstream_cpu": win.cpu.get(up.name, 0.0),
                    "proxy_cpu": win.cpu.get(counters[name].name, 0.0),
                    # the clients only counted bytes: one untimed hashed download instead
                    "verify": "clients" if args.client_verify else verify_blob_get(
                        mirrors[name].port, REPO, bl, b.xfer_timeout),
                })
                row[name] = res
                log(f"{n:3d} clients via {MIRROR_LABEL[name]:22s}: wall {res['wall']:.2f}s, "
                    f"{res['ok']}/{n} correct, upstream sent {res['upstream_ratio']:.2f}x "
                    f"the blob in {len(gets)} blob GETs" + (" (noisy)" if noisy else "")
                    + (f"; errors: {res['errors']}" if res["errors"] else ""))
            ss.check_alive()
            return row

        # 1 client: the cold pull that caches the blob for the warm phase
        warm_blob = b.pool.take("proxied")
        push_monolithic(up.port, REPO, warm_blob, b.xfer_timeout)
        conc["1"] = cold_concurrent(1, warm_blob, 0)
        # the blob the warm phase reads must be the one every mirror cached
        for name in MIRRORS:
            if conc["1"][name]["ok"] != 1:
                raise BenchError(f"the single cold pull via {name} failed: "
                                 f"{conc['1'][name]['errors']}")
        wait_ref_stored(b, "ref-proxy", warm_blob)
        extra_single_rounds(b, up, conc["1"], lambda blob, r: cold_concurrent(1, blob, r))
        if "warm" in args.phases:
            run_warm(b, ss, mirrors, counters, warm_blob)
        if "concurrent" in args.phases:
            for i, n in enumerate(args.clients):
                blob = b.pool.take("proxied")
                push_monolithic(up.port, REPO, blob, b.xfer_timeout)
                conc[str(n)] = cold_concurrent(n, blob, i + 1)
        b.data["mirror_peak_rss_mib"] = {
            name: b.sampler.peak_tree_kib.get(mirrors[name].name, 0) / 1024 for name in mirrors}
    finally:
        ss.stop()



def extra_single_rounds(b: Bench, up: Server, first: dict[str, Any],
                        pull: Callable[[Blob, int], dict[str, Any]]) -> None:
    """--single-rounds N: N-1 more single cold pulls (fresh blobs, the mirrors' order
    rotating), kept beside the first in data["single_rounds"]; medians logged."""
    rounds = [first]
    for r in range(1, b.args.single_rounds):
        blob = b.pool.take("proxied")
        push_monolithic(up.port, REPO, blob, b.xfer_timeout)
        rounds.append(pull(blob, r))
        wait_ref_stored(b, "ref-proxy", blob)
    b.data["single_rounds"] = rounds
    size = b.args.size_mib * MiB
    for name in MIRRORS:
        walls = [row[name]["wall"] for row in rounds if row[name].get("wall")]
        cpus = [row[name]["mirror_cpu_settled"] for row in rounds]
        if walls:
            log(f"single cold via {MIRROR_LABEL[name]:22s}: median {statistics.median(walls):.2f}s"
                f" ({size / statistics.median(walls) / 1e6:,.0f} MB/s), walls "
                + ", ".join(f"{w:.2f}" for w in walls)
                + f"; CPU s/GiB median {statistics.median(cpus) / size * 2**30:.2f}")


def wait_ref_stored(b: Bench, name: str, blob: Blob) -> None:
    """docker-registry's proxy stores its copy in the background; wait until it is there."""
    path = docker_registry_blob_path(b.work, name, blob.digest)
    deadline = time.monotonic() + b.xfer_timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if path.stat().st_size == blob.size:
                return
        time.sleep(0.2)
    raise BenchError(f"docker-registry proxy never stored {blob.digest} ({path})")


def run_warm(b: Bench, ss: ServerSet, mirrors: dict[str, Server],
             counters: dict[str, CountProxy], blob: Blob) -> None:
    args = b.args
    out: dict[str, Any] = {name: [] for name in MIRRORS}
    out.update(noisy={name: [] for name in MIRRORS}, upstream_bytes={})
    b.data["warm"] = out
    for name in MIRRORS:
        counters[name].reset()
    order = list(MIRRORS)
    for r in range(args.warm_rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            def same(attempt: int) -> Blob:
                return blob

            def get(bl: Blob, name: str = name) -> float:
                return get_blob_curl(mirrors[name].port, REPO, bl, b.xfer_timeout)

            mbps, _win, noisy = b.measure("warm", f"warm via {name}", ss.pids, same, get)
            out[name].append(mbps)
            out["noisy"][name].append(noisy)
            log(f"warm via {MIRROR_LABEL[name]:22s}: {mbps:8.1f} MB/s"
                + (" (noisy)" if noisy else ""))
    out["verify"] = {name: verify_blob_get(mirrors[name].port, REPO, blob, b.xfer_timeout)
                     for name in MIRRORS}
    for name in MIRRORS:
        st = counters[name].stats()
        out["upstream_bytes"][name] = st["down"]
        out.setdefault("upstream_blob_gets", {})[name] = len(blob_gets(st, blob.digest))
    log(f"warm: sha256 checks {out['verify']}; upstream bytes during warm pulls "
        f"{out['upstream_bytes']}")
    ss.check_alive()

