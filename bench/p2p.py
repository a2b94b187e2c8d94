"""P2P vs plain HTTP for N node caches pulling one blob at once (docs/p2p.md).

One edge and N nodes, each a real stablemirror process in its own network namespace on a
bridge (tests/support/netns.py); the edge's uplink and every node's link (both directions)
shaped with tc tbf to `--rate`; each node's client (curl) runs in the node's namespace, as
containerd beside its node cache. Round 1: nodes with `p2p` on; round 2, the same
namespaces with fresh caches and P2P off (every node from the edge). Reports the edge's
egress (bytes its veth carried out) over the blob size, the slowest node's time over
blob size / link rate, p50/p99 completion, bytes each node uploaded; writes the `p2p`
section of bench/RESULTS.md and a PNG of completion over time. Needs root.

    .venv/bin/python bench/p2p.py                       # 16 nodes, 256 MiB, 100mbit
    .venv/bin/python bench/p2p.py --nodes 8 --size-mib 64
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness.procfs import tree_cpu_seconds  # noqa: E402
from bench.p2p_plot import plot  # noqa: E402
from tests.support.mirror_support import push_random_blob_streamed  # noqa: E402
from tests.support.netns import Bridge, NetnsServer, sh  # noqa: E402
from tests.support.p2p_support import edge_config, metric_value, node_config  # noqa: E402

MiB = 1 << 20


def _rate_bits(rate: str) -> float:
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for unit, factor in units.items():
        if rate.endswith(unit):
            return float(rate[: -len(unit)]) * factor
    raise SystemExit(f"--rate {rate!r}: use kbit, mbit or gbit")


def _pull(node: NetnsServer, digest: str, t0: float) -> float:
    """curl inside the node's namespace, as containerd on a GPU host pulls from the node
    cache beside it (loopback), so the client's bytes do not share the node's shaped
    uplink with what the node uploads to its peers; sha256sum checks every byte."""
    url = f"{node.url}/v2/lib/blob/blobs/{digest}"
    done = subprocess.run(["ip", "netns", "exec", node.ns, "sh", "-c",
                           f"curl -sf --max-time 1800 '{url}' | sha256sum"],
                          capture_output=True, text=True, timeout=1900, check=False)
    took = time.monotonic() - t0
    if "sha256:" + done.stdout.split(" ")[0] != digest:
        raise SystemExit(f"{node.ns}: wrong bytes or a failed pull: {done.stdout}"
                         f"{done.stderr}")
    return took


def _cpu(server: NetnsServer) -> float:
    assert server.proc is not None  # `ip netns exec` execs the server: the same pid
    return tree_cpu_seconds(server.proc.pid)


def _round(bridge: Bridge, edge: NetnsServer, hosts: list[tuple[str, str]], root: Path,
           p2p: bool, size: int, window: int, stripes: int, logs: Path | None
           ) -> dict[str, object]:
    name = "p2p" if p2p else "http"
    digest = push_random_blob_streamed(edge.url, "lib/blob", size)
    nodes = []
    for i, (ns, address) in enumerate(hosts):
        cfg = node_config(root / f"{name}-n{i}.yml", edge.url, f"{name}-n{i}",
                          "0.0.0.0:6881", no_progress_seconds=30,
                          stream_window=window, stripes=stripes)
        if not p2p:
            data = json.loads(cfg.read_text())
            data["p2p"]["enabled"] = False
            cfg.write_text(json.dumps(data))
        nodes.append(NetnsServer(ns, address, root / f"{name}-n{i}", "--config", str(cfg)))
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda s: s.start(60), nodes))
    try:
        before = bridge.sent_by(1)
        cpu_before = [_cpu(n) for n in [*nodes, edge]]
        t0 = time.monotonic()
        with ThreadPoolExecutor(len(nodes)) as pool:
            times = sorted(pool.map(lambda n: _pull(n, digest, t0), nodes))
        egress = bridge.sent_by(1) - before
        cpu = [_cpu(n) - b for n, b in zip([*nodes, edge], cpu_before, strict=True)]
        print(f"{name}: CPU s of each node (mean {statistics.mean(cpu[:-1]):.2f}, max "
              f"{max(cpu[:-1]):.2f}), of the edge {cpu[-1]:.2f}; wall {times[-1]:.1f} s",
              file=sys.stderr)
        uploaded = [metric_value(n.url, "stablemirror_p2p_uploaded_bytes_total")
                    for n in nodes] if p2p else [0.0] * len(nodes)
        fallbacks = sum(metric_value(n.url, "stablemirror_p2p_fallbacks_total")
                        for n in nodes) if p2p else 0
        if p2p and fallbacks:  # why, from each node's log
            for n in nodes:
                for line in n.log().splitlines():
                    if "goes on by plain HTTP" in line or "Traceback" in line:
                        print(f"{n.ns}: {line[-200:]}", file=sys.stderr)
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            for n in [*nodes, edge]:
                (logs / f"{name}-{n.ns}.log").write_text(n.log())
    finally:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda s: s.stop(), nodes))
    return {"times": times, "egress": egress, "uploaded": uploaded, "fallbacks": fallbacks}


def _p(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, int(q * len(times)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--only-p2p", action="store_true", help="skip the plain HTTP round")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--burst", default="1mb",
                    help="tc tbf burst of every link (at or below 64kb tbf segments every "
                    "GSO packet: the kernel's CPU, not the shaping, becomes the limit)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--stream-window", type=int, default=4,
                    help="p2p.stream_window of the nodes")
    ap.add_argument("--stripes", type=int, default=1, help="p2p.stripes of the nodes")
    ap.add_argument("--png", type=Path, default=ROOT / "bench" / "p2p.png")
    ap.add_argument("--logs", type=Path, help="keep every server's log here")
    args = ap.parse_args()
    size = args.size_mib * MiB
    # An installed server has .pyc files; the servers here start from src/, so compile it
    # once into a cache of this run (PYTHONDONTWRITEBYTECODE would make every node compile
    # what it imports lazily during its first pull).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="p2p-bench-pyc-")
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"]
    compileall.compile_dir(str(ROOT / "src"), quiet=1)
    line_rate = _rate_bits(args.rate) / 8
    bridge = Bridge()
    edge = None
    try:
        with tempfile.TemporaryDirectory(prefix="p2p-bench-") as tmp:
            root = Path(tmp)
            ns, address = bridge.host(1)
            bridge.shape(ns, args.rate, args.burst)
            # the tracker at its default interval, not the tests' 1 s
            edge = NetnsServer(ns, address, root / "edge", "--config",
                               str(edge_config(root / "edge.yml", announce_seconds=5)))
            edge.start(60)
            hosts = []
            for i in range(args.nodes):
                ns, address = bridge.host(10 + i)
                bridge.shape(ns, args.rate, args.burst)  # uplink
                sh("tc", "qdisc", "add", "dev", bridge.outside(10 + i), "root", "tbf",
                   "rate", args.rate, "burst", args.burst, "latency", "50ms")  # downlink
                hosts.append((ns, address))
            runs = {p2p: _round(bridge, edge, hosts, root, p2p, size, args.stream_window,
                                args.stripes, args.logs)
                    for p2p in ((True,) if args.only_p2p else (True, False))}
    finally:
        if edge is not None:
            edge.stop()
        bridge.close()
    ideal = size / line_rate
    rows = []
    for p2p, r in runs.items():
        times: list[float] = r["times"]  # type: ignore[assignment]
        uploaded: list[float] = r["uploaded"]  # type: ignore[assignment]
        rows.append((
            "P2P" if p2p else "plain HTTP", int(r["egress"]) / size,  # type: ignore[call-overload]
            times[-1] / ideal, _p(times, 0.5), _p(times, 0.99), times[-1],
            statistics.mean(uploaded) / MiB, max(uploaded) / MiB, r["fallbacks"]))
    table = ["| run | edge egress / blob | slowest / (blob / link rate) | p50 s | p99 s | "
             "slowest s | uploaded per node MiB (mean, max) | fallbacks |",
             "|---|---|---|---|---|---|---|---|"]
    for name, eg, slow, p50, p99, last, up_mean, up_max, fb in rows:
        table.append(f"| {name} | {eg:.2f}x | {slow:.2f}x | {p50:.1f} | {p99:.1f} | "
                     f"{last:.1f} | {up_mean:.0f}, {up_max:.0f} | {fb} |")
    if args.only_p2p:
        print("\n".join(table))
        return
    plot([runs[True]["times"], runs[False]["times"]], args.png)  # type: ignore[list-item]
    section = "\n".join([
        "<!-- BEGIN p2p -->",
        "## P2P between node caches (`bench/p2p.py`)",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/p2p.py', *sys.argv[1:]])}` "
        "(root).",
        "",
        f"{args.nodes} nodes and one edge in network namespaces, every link (edge uplink, "
        f"each node's up- and downlink) shaped to {args.rate} with tc tbf (burst "
        f"{args.burst}), each node's client (curl | sha256sum) in its node's namespace; one "
        f"{args.size_mib} MiB blob pulled on all nodes at once; P2P and plain HTTP in the "
        f"same run. Ideal per node: blob / link rate = {ideal:.1f} s. Targets (issue 15): "
        "edge egress <= 1.5x the blob, slowest node <= 1.5x the ideal.",
        "", *table, "",
        f"Completion over time: `bench/{args.png.name}` (y: nodes done, x: seconds; "
        "blue P2P, orange plain HTTP). Measured "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on a shared 2-core machine.",
        "<!-- END p2p -->", ""])
    text = args.results.read_text() if args.results.exists() else ""
    if "<!-- BEGIN p2p -->" in text:
        start = text.index("<!-- BEGIN p2p -->")
        end = text.index("<!-- END p2p -->") + len("<!-- END p2p -->\n")
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    args.results.write_text(text)
    print("\n".join(table))


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "*")
    main()
