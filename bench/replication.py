"""Replication over a shaped link: `stablemirror copy` vs `skopeo copy`, side by side.

    sudo .venv/bin/python bench/replication.py [--size-mib 128] [--rate-mbit 100] \
        [--delay-ms 25] [--results bench/RESULTS.md]

Root only: it creates a network namespace of its own (`smrepl<pid>`), runs everything in it
and removes it at the end, so every byte stays on that namespace's loopback. Inside, two
Debian docker-registry servers (source and destination, both 127.0.0.1) and an image with
one random layer of `--size-mib`; then `tc netem` shapes the namespace's `lo` (delay
`--delay-ms` each way, so the RTT is twice that, and `--rate-mbit`), and each tool copies the
image once into its own repository of the destination, skopeo first.

On one loopback every byte crosses the shaper twice (source -> copier, copier ->
destination), so the link's ideal time for the copy is 2 x size / rate; both tools see the
same link. The ratio skopeo time / stablemirror time (>= 1.0: stablemirror is as fast or
faster) and each tool's time / ideal go into the `replication` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- BEGIN replication -->", "<!-- END replication -->"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=900)


def outside(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench/replication.py: needs root (network namespace, tc)", file=sys.stderr)
        return 2
    ns = f"smrepl{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        inner = [sys.executable, __file__, "--inside", ns, "--size-mib", str(args.size_mib),
                 "--rate-mbit", str(args.rate_mbit), "--delay-ms", str(args.delay_ms),
                 "--results", str(args.results),
                 *[f"--variant={v}" for v in args.variant or []]]
        return subprocess.run(["ip", "netns", "exec", ns, *inner], check=False,
                              timeout=1800).returncode
    finally:
        sh("ip", "netns", "delete", ns, check=False)


def inside(args: argparse.Namespace) -> int:
    import requests
    from tests.support.clients import ReferenceRegistry
    from tests.support.mirror_support import push_blob, push_random_blob_streamed, sha256

    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="smrepl-") as tmp:
        src, dst = ReferenceRegistry(Path(tmp) / "src"), ReferenceRegistry(Path(tmp) / "dst")
        src.start()
        dst.start()
        try:
            layer = push_random_blob_streamed(src.url, "bench/img", size)
            config = json.dumps({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": []}}).encode()
            push_blob(src.url, "bench/img", config)
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": sha256(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer, "size": size}]}).encode()
            requests.put(f"{src.url}/v2/bench/img/manifests/v1", data=manifest, timeout=30,
                         headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
                         ).raise_for_status()
            shaped = sh("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                        f"{args.delay_ms}ms", "rate", f"{args.rate_mbit}mbit", "limit",
                        "100000", check=False)
            link = f"`tc netem delay {args.delay_ms}ms rate {args.rate_mbit}mbit`"
            if shaped.returncode != 0:  # a kernel without sch_netem: the rate alone
                sh("tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate",
                   f"{args.rate_mbit}mbit", "burst", "256kb", "latency", "100ms")
                link = (f"`tc tbf rate {args.rate_mbit}mbit` (this kernel has no netem: "
                        f"{shaped.stderr.strip()!r}; so no added delay, RTT ~0)")
            times: dict[str, float] = {}
            started = time.monotonic()
            sh("skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{src.host}/bench/img:v1", f"docker://{dst.host}/skopeo/img:v1")
            times["skopeo copy"] = time.monotonic() - started
            started = time.monotonic()
            done = sh(sys.executable, "-m", "stablemirror", "copy", "--no-progress",
                      f"docker://{src.host}/bench/img:v1", f"docker://{dst.host}/sm/img:v1")
            times["stablemirror copy"] = time.monotonic() - started
            for n, extra in enumerate(args.variant or []):
                started = time.monotonic()
                sh(sys.executable, "-m", "stablemirror", "copy", "--no-progress",
                   *extra.split(), f"docker://{src.host}/bench/img:v1",
                   f"docker://{dst.host}/sm{n}/img:v1")
                times[f"stablemirror copy {extra}"] = time.monotonic() - started
            sh("tc", "qdisc", "del", "dev", "lo", "root", check=False)
            digest = done.stdout.strip()
            check = requests.head(f"{dst.url}/v2/sm/img/manifests/v1", timeout=30,
                                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert check.headers.get("Docker-Content-Digest") == digest == sha256(manifest)
        finally:
            sh("tc", "qdisc", "del", "dev", "lo", "root", check=False)
            src.stop()
            dst.stop()
    ideal = 2 * size * 8 / (args.rate_mbit * 1e6)
    ratio = times["skopeo copy"] / times["stablemirror copy"]
    variants = "".join(f" --variant='{v}'" for v in args.variant or [])
    rows = [f"| {tool} | {t:.1f} s | {t / ideal:.2f}x |" for tool, t in times.items()]
    section = "\n".join([
        BEGIN, "## Replication over a shaped link (`bench/replication.py`)", "",
        f"One image with a {args.size_mib} MiB random layer, docker-registry to "
        f"docker-registry, over {link} on the loopback of a private network namespace "
        f"(every byte crosses the shaper twice, so the ideal copy takes 2 x size / rate = "
        f"{ideal:.1f} s). Command: `sudo .venv/bin/python bench/replication.py --size-mib "
        f"{args.size_mib} --rate-mbit {args.rate_mbit} --delay-ms {args.delay_ms}{variants}`. "
        f"Load average at the end: {os.getloadavg()[0]:.1f}.", "",
        "| tool | time | / ideal |", "|---|---|---|", *rows, "",
        f"**stablemirror copy vs skopeo copy: {ratio:.2f}x** (skopeo time / stablemirror "
        "time; defaults: 8 MiB chunks, 4 ranged streams).", "",
        ("Not run: " + ("" if args.size_mib >= 1024 else "the 1 GiB size of the issue, ")
         + "the 2% loss link (no netem), the 50% cut (its bytes are bounded by the functional "
         "test: at most one chunk more than the blob)."), END])
    print(section)
    results = Path(args.results)
    text = results.read_text() if results.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    text = pattern.sub(section, text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + section + "\n"
    results.write_text(text)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=128)
    p.add_argument("--rate-mbit", type=int, default=100)
    p.add_argument("--delay-ms", type=int, default=25)
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--variant", action="append", help="extra `copy` options to time too "
                   "(repeatable), e.g. '--parallel-streams 1 --chunk-mib 32'")
    p.add_argument("--inside", help=argparse.SUPPRESS)
    args = p.parse_args()
    return inside(args) if args.inside else outside(args)


if __name__ == "__main__":
    sys.exit(main())
