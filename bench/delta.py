#!/usr/bin/env python3
"""Delta-transfer benchmark (issue 14, "Speed"): v2 of a model pulled through a mirror that
holds v1, by delta and whole, over a 100 Mbit/s link; and what chunk indexing costs.

Run from the repository root:

    .venv/bin/python bench/delta.py --quick   # 128 MiB model (4 shards x 4 x 8 MiB tensors)
    .venv/bin/python bench/delta.py           # 1 GiB model (8 shards x 8 x 16 MiB tensors)

1. A center (`stablemirror serve`, hosted) gets v1 and v2 (10% of the tensors changed) of a
   synthetic safetensors model (tests/support/safetensors_models.py), ModelPack-shaped, and
   indexes both in the background. Two node mirrors sit behind one byte-counting proxy
   (bench/countproxy.py --shared: one paced link for every connection): one with delta
   transfer, one with `mirror.delta: false` (whole changed layers), a third holds nothing
   (the full pull). The first two pull v1 unpaced; then the link is paced to 100 Mbit/s
   and each pulls v2: upstream bytes and wall time.
2. Indexing cost, in-process on the v2 shard files: SHA-256 alone, the chunk indexer alone
   (FastCDC + BLAKE3 per chunk, docs/delta.md), and a pack-like pass (read, write a copy,
   SHA-256) with and without the indexer fed in the same pass.
3. Chunk sizes: dedup (bytes fetched / bytes changed) and index size for several FastCDC
   average sizes on v1 -> v2 with 10% and 1% of tensors changed and with tensors inserted.

Writes the delta-quick / delta-full section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.common import REPO_ROOT, RESULTS_MD, BenchError, log
from harness.proxies import CountProxy
from harness.results import command_line, machine_info, update_results_file
from harness.servers import Server, stablemirror_server

sys.path.insert(0, str(REPO_ROOT))  # the synthetic models are the tests' own
import requests
from tests.support.safetensors_models import (
    OCI_MANIFEST,
    Model,
    make_model,
    push_model,
    sha256,
    with_changed,
    with_inserted,
)

from stablemirror.delta.chunker import BackgroundIndexer, Indexer, index_file
from stablemirror.delta.format import ChunkParams
from stablemirror.delta.plan import LocalChunk, plan

LINK_MBIT = 100.0
TIMEOUT = 600


def _wait(check: Callable[[], bool], what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _has_index(base: str, repo: str, digest: str) -> bool:
    r = requests.get(f"{base}/v2/{repo}/referrers/{digest}",
                     params={"artifactType": "application/vnd.stablemirror.chunk-index.v1"},
                     timeout=TIMEOUT)
    return bool(r.ok and r.json()["manifests"])


def _index_bytes(base: str, repo: str, digest: str) -> int:
    r = requests.get(f"{base}/v2/{repo}/referrers/{digest}", timeout=TIMEOUT)
    total = 0
    for m in r.json()["manifests"]:
        doc = requests.get(f"{base}/v2/{repo}/manifests/{m['digest']}", timeout=TIMEOUT,
                           headers={"Accept": OCI_MANIFEST}).json()
        total += sum(d["size"] for d in doc["layers"])
    return total


def _indexed(data_dir: Path, digests: list[str]) -> bool:
    db = data_dir / "index.db"
    if not db.exists():
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        try:
            done = {r[0] for r in c.execute("SELECT digest FROM delta_indexed")}
        except sqlite3.OperationalError:
            return False
    return set(digests) <= done


def _pull(base: str, repo: str, tag: str, model: Model) -> None:
    r = requests.get(f"{base}/v2/{repo}/manifests/{tag}", timeout=TIMEOUT,
                     headers={"Accept": OCI_MANIFEST})
    r.raise_for_status()
    for f in model.files:
        digest = sha256(f)
        h = hashlib.sha256()
        with requests.get(f"{base}/v2/{repo}/blobs/{digest}", stream=True,
                          timeout=TIMEOUT) as got:
            got.raise_for_status()
            for piece in got.iter_content(1 << 20):
                h.update(piece)
        if "sha256:" + h.hexdigest() != digest:
            raise BenchError(f"{base}: wrong bytes for {digest}")


def transfer(work: Path, v1: Model, v2: Model) -> dict[str, float]:
    servers: list[Server] = []
    proxy: CountProxy | None = None
    try:
        center = stablemirror_server(work, "center", sys.executable, 1)
        center.start(None, 60)
        servers.append(center)
        center_url = f"http://127.0.0.1:{center.port}"
        push_model(center_url, "models/llm", "v1", v1)
        d2 = push_model(center_url, "models/llm", "v2", v2)
        _wait(lambda: _has_index(center_url, "models/llm", d2), "the center's index of v2")
        index = _index_bytes(center_url, "models/llm", d2)
        proxy = CountProxy("link", center.port, work, 0.0, shared=True)
        proxy.start()
        nodes = {}
        for name, delta in (("delta", "true"), ("whole", "false"), ("cold", "false")):
            node = stablemirror_server(work, f"node-{name}", sys.executable, 1,
                                       upstream=proxy.url,
                                       env={"STABLEMIRROR_MIRROR__DELTA": delta})
            node.start(None, 60)
            servers.append(node)
            nodes[name] = f"http://127.0.0.1:{node.port}"
            if name != "cold":  # the cold node holds nothing: the full pull of v2
                _pull(nodes[name], "models/llm", "v1", v1)
        _wait(lambda: _indexed(work / "node-delta-data", [sha256(f) for f in v1.files]),
              "the node's index of v1")
        proxy.set_rate(LINK_MBIT / 8)
        out: dict[str, float] = {"index_bytes": index}
        for name, node_url in nodes.items():
            proxy.reset()
            started = time.monotonic()
            _pull(node_url, "models/llm", "v2", v2)
            out[f"{name}_seconds"] = time.monotonic() - started
            out[f"{name}_bytes"] = proxy.stats()["down"]
            log(f"v2 through node-{name}: {out[f'{name}_bytes'] / 1e6:.1f} MB upstream in "
                f"{out[f'{name}_seconds']:.2f} s")
        return out
    finally:
        if proxy is not None:
            proxy.stop()
        for s in reversed(servers):
            s.stop()


def _best(fn: Callable[[], None], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def indexing_cost(work: Path, model: Model) -> dict[str, float]:
    files = []
    for i, f in enumerate(model.files):
        p = work / f"shard-{i}.safetensors"
        p.write_bytes(f)
        files.append(p)

    def hash_only() -> None:
        for p in files:
            with p.open("rb") as f:
                h = hashlib.sha256()
                while data := f.read(4 << 20):
                    h.update(data)

    def index_only() -> None:
        for p in files:
            index_file(p, "00" * 32)

    def pack(with_index: bool) -> Callable[[], None]:
        def run() -> None:
            for p in files:
                indexer = BackgroundIndexer(layer_hex="00" * 32) if with_index else None
                h = hashlib.sha256()
                with p.open("rb") as f, (work / "copy").open("wb") as out:
                    while data := f.read(4 << 20):
                        h.update(data)
                        out.write(data)
                        if indexer is not None:
                            indexer.feed(data)
                if indexer is not None:
                    indexer.finish()
        return run

    # interleaved rounds, best of each: other processes on the machine hit both alike
    out = {"hash": 1e9, "index": 1e9, "pack": 1e9, "pack_indexed": 1e9,
           "bytes": float(model.size)}
    for _ in range(5):
        for key, fn in (("hash", hash_only), ("index", index_only), ("pack", pack(False)),
                        ("pack_indexed", pack(True))):
            out[key] = min(out[key], _best(fn, 1))
    (work / "copy").unlink(missing_ok=True)
    return out


def chunk_sizes(v1: Model, cases: dict[str, Model]) -> list[tuple[int, dict[str, float]]]:
    rows = []
    for avg in (64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20):
        params = ChunkParams(avg, avg // 4, avg * 4)

        def cut(m: Model, params: ChunkParams = params) -> list:  # type: ignore[type-arg]
            out = []
            for f in m.files:
                i = Indexer(params, "00" * 32)
                i.feed(f)
                out.append(i.finish())
            return out

        t = time.perf_counter()
        old = cut(v1)
        seconds = time.perf_counter() - t
        table = {c.hash: LocalChunk(Path("/"), c.offset) for ix in old for c in ix.chunks()}
        row = {"chunks_per_gib": sum(len(i) for i in old) * (1 << 30) / v1.size,
               "index_per_gib": sum(len(i.encode()) for i in old) * (1 << 30) / v1.size,
               "mbps": v1.size / seconds / 1e6}
        for name, v2 in cases.items():
            new = cut(v2)
            fetched = sum(plan(ix, table).remote_bytes for ix in new)
            row[name] = fetched / v2.changed_bytes
        rows.append((avg, row))
    return rows


def report(args: argparse.Namespace, v1: Model, v2: Model, t: dict[str, float],
           cost: dict[str, float], sizes: list[tuple[int, dict[str, float]]],
           started: dt.datetime) -> str:
    info = machine_info()
    changed = v2.changed_bytes
    byte_ratio = t["delta_bytes"] / (changed + t["index_bytes"])
    time_ratio = t["delta_seconds"] / t["cold_seconds"]
    pack_overhead = cost["pack_indexed"] / cost["pack"] - 1
    index_vs_hash = cost["index"] / cost["hash"]
    gb = cost["bytes"] / 1e9
    mode = "delta-quick" if args.quick else "delta-full"
    lines = [
        f"## Delta transfer ({'quick' if args.quick else 'full'})", "",
        f"- Date: {started:%Y-%m-%d %H:%M:%S} UTC",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Python {info['python']}",
        f"- Command: `{command_line()}`",
        f"- Model: {len(v1.files)} safetensors shards, {v1.size / 2**20:.0f} MiB, tensors of "
        f"{args.tensor_mib} MiB; v2: {changed / 2**20:.0f} MiB of tensors changed (10%); "
        f"chunk index of v2: {t['index_bytes'] / 1e3:.1f} kB",
        f"- Link: {LINK_MBIT:g} Mbit/s shared by all connections (bench/countproxy.py "
        "--shared) between node mirror and center; v1 pulled unpaced first", "",
        "| Metric | full pull (node holds nothing) | whole changed layers (node holds v1, "
        "delta off) | delta (node holds v1) | delta / full | delta / whole layers |",
        "|---|---|---|---|---|---|",
        f"| upstream bytes, v2 | {t['cold_bytes'] / 1e6:.1f} MB | "
        f"{t['whole_bytes'] / 1e6:.1f} MB | {t['delta_bytes'] / 1e6:.1f} MB | "
        f"{t['delta_bytes'] / t['cold_bytes']:.3f}x | "
        f"{t['delta_bytes'] / t['whole_bytes']:.3f}x |",
        f"| wall time, v2 | {t['cold_seconds']:.2f} s | {t['whole_seconds']:.2f} s | "
        f"{t['delta_seconds']:.2f} s | {time_ratio:.3f}x | "
        f"{t['delta_seconds'] / t['whole_seconds']:.3f}x |", "",
        "| Target | Measured | Result |", "|---|---|---|",
        f"| upstream bytes ≤ 1.15x (changed bytes + index) | {byte_ratio:.3f}x | "
        f"{'PASS' if byte_ratio <= 1.15 else 'FAIL'} |",
        f"| delta time ≤ 0.2x the full pull on 100 Mbit/s | {time_ratio:.3f}x | "
        f"{'PASS' if time_ratio <= 0.2 else 'FAIL'} |",
        f"| indexing adds ≤ 25% to a pack-like pass (read, copy, SHA-256; indexer in "
        f"its own thread) | "
        f"{pack_overhead * 100:+.1f}% | {'PASS' if pack_overhead <= 0.25 else 'FAIL'} |", "",
        f"Indexing cost on {gb:.2f} GB (best of 5): SHA-256 alone {gb / cost['hash']:.2f} GB/s; "
        f"indexer alone (FastCDC + BLAKE3 per chunk) {gb / cost['index']:.2f} GB/s = "
        f"{index_vs_hash:.2f}x the time of SHA-256; pack-like pass "
        f"{cost['pack']:.3f} s, with the indexer fed in the same pass "
        f"{cost['pack_indexed']:.3f} s.", "",
        "Chunk sizes (FastCDC avg, min avg/4, max 4 avg; fetched / changed bytes, no index):",
        "", "| avg | chunks/GiB | index/GiB | chunking MB/s | 10% | 1% | inserted |",
        "|---|---|---|---|---|---|---|",
    ]
    for avg, row in sizes:
        lines.append(f"| {avg >> 10} KiB | {row['chunks_per_gib']:.0f} | "
                     f"{row['index_per_gib'] / 1e6:.2f} MB | {row['mbps']:.0f} | "
                     f"{row['10%']:.3f}x | {row['1%']:.3f}x | {row['inserted']:.3f}x |")
    update_results_file(Path(args.results), mode, "\n".join(lines))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--shards", type=int)
    p.add_argument("--tensors", type=int, help="tensors per shard")
    p.add_argument("--tensor-mib", type=int)
    p.add_argument("--results", default=str(RESULTS_MD))
    args = p.parse_args(argv)
    shards, tensors, mib = (4, 4, 8) if args.quick else (8, 8, 16)
    args.shards = args.shards or shards
    args.tensors = args.tensors or tensors
    args.tensor_mib = args.tensor_mib or mib
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    work = Path(tempfile.mkdtemp(prefix="delta-bench-"))
    try:
        v1 = make_model(1, args.shards, args.tensors, args.tensor_mib << 20)
        v2 = with_changed(v1, 0.10, 2)
        t = transfer(work, v1, v2)
        cost = indexing_cost(work, v2)
        cases = {"10%": v2, "1%": with_changed(v1, 0.01, 3),
                 "inserted": with_inserted(v1, 2, args.tensor_mib << 20, 4)}
        sizes = chunk_sizes(v1, cases)
        print(report(args, v1, v2, t, cost, sizes, started))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
