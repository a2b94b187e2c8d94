"""Event-triggered replication latency: push at a source stablemirror, manifest visible at
a destination stablemirror, side by side with the manual way (the push, then `skopeo copy`).

    .venv/bin/python bench/replication_event.py [--rounds 20] [--results bench/RESULTS.md]

Two `stablemirror serve` processes on loopback (the source with `--workers 2` and one push
rule, `trigger: {event: true}`, `jobs.poll_seconds: 0.2`). Each round pushes a new small
image (a 64 KiB layer and its config) to the source over HTTP; the clock starts when the
manifest PUT has answered 201 and stops when the destination's manifest GET returns the
same bytes (polled every 10 ms). The reference is the same push followed by one
`skopeo copy docker://source/... docker://destination/...` into another repository: the
clock stops when skopeo exits. Writes the `replication-event` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.results import command_line, machine_info, tool_output, update_results_file  # noqa: E402
from harness.servers import SM_COMMAND, stablemirror_server  # noqa: E402

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TIMEOUT = 30.0


def push_blob(base: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/?digest={digest}", data=data,
                      timeout=TIMEOUT)
    if r.status_code != 201:
        raise SystemExit(f"blob push to {base} failed: {r.status_code} {r.text}")
    return digest


def push_image(base: str, repo: str, tag: str) -> bytes:
    layer = os.urandom(64 * 1024)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    descs = [{"mediaType": "application/vnd.oci.image.config.v1+json",
              "digest": push_blob(base, repo, config), "size": len(config)},
             {"mediaType": "application/vnd.oci.image.layer.v1.tar",
              "digest": push_blob(base, repo, layer), "size": len(layer)}]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "config": descs[0],
                           "layers": descs[1:]}).encode()
    r = requests.put(f"{base}/v2/{repo}/manifests/{tag}", data=manifest,
                     headers={"Content-Type": MANIFEST}, timeout=TIMEOUT)
    if r.status_code != 201:
        raise SystemExit(f"manifest push to {base} failed: {r.status_code} {r.text}")
    return manifest


def visible(base: str, repo: str, tag: str, manifest: bytes) -> bool:
    r = requests.get(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST},
                     timeout=TIMEOUT)
    return r.status_code == 200 and r.content == manifest


def wait_visible(base: str, repo: str, tag: str, manifest: bytes, t0: float) -> float:
    while time.monotonic() - t0 < TIMEOUT:
        if visible(base, repo, tag, manifest):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise SystemExit(f"{repo}:{tag} never appeared at {base}")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace, work: Path) -> str:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise SystemExit("bench/replication_event.py: skopeo not found (apt-get install skopeo)")
    destination = stablemirror_server(work, "destination", sys.executable, 1)
    destination.start(None, 60)
    dst = f"http://127.0.0.1:{destination.port}"
    config = work / "source.yaml"
    config.write_text(json.dumps({
        "jobs": {"poll_seconds": 0.2},
        "replication": {"rules": [{"name": "to-destination", "mode": "push",
                                   "destination": dst, "filters": {"repositories": ["ev/*"]},
                                   "trigger": {"event": True}}]}}))
    source = stablemirror_server(work, "source", sys.executable, 2,
                                 template=SM_COMMAND + f" --config {config}")
    source.start(None, 60)
    src = f"http://127.0.0.1:{source.port}"
    event_s: list[float] = []
    manual_s: list[float] = []
    try:
        for i in range(args.rounds):
            manifest = push_image(src, "ev/app", f"r{i}")
            event_s.append(wait_visible(dst, "ev/app", f"r{i}", manifest, time.monotonic()))
            push_image(src, "manual/app", f"r{i}")
            t0 = time.monotonic()
            subprocess.run([skopeo, "copy", "--quiet", "--src-tls-verify=false",
                            "--dest-tls-verify=false", f"docker://127.0.0.1:{source.port}/"
                            f"manual/app:r{i}", f"docker://127.0.0.1:{destination.port}/"
                            f"manual/app:r{i}"], check=True, capture_output=True, timeout=120)
            manual_s.append(time.monotonic() - t0)
            r = requests.head(f"{dst}/v2/manual/app/manifests/r{i}",
                              headers={"Accept": MANIFEST}, timeout=TIMEOUT)
            if r.status_code != 200:
                raise SystemExit(f"skopeo copy left no manual/app:r{i}: {r.status_code}")
    finally:
        source.stop()
        destination.stop()
    info = machine_info()
    p50_event, p50_manual = statistics.median(event_s), statistics.median(manual_s)
    lines = [
        "## Event-triggered replication: push to visible at the destination",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}; skopeo "
        f"{tool_output('skopeo', '--version').split()[-1]}",
        f"- Command: `{command_line()}`",
        f"- {args.rounds} rounds; a new image (64 KiB layer + config) per round; source "
        "`serve --workers 2` with one push rule `trigger: {event: true}` and "
        "`jobs.poll_seconds: 0.2`; destination `serve --workers 1`; both on loopback. The "
        "reference is the same push followed by one `skopeo copy` between the same two "
        "servers (what a script or CI step does without event triggers).",
        "",
        "| | p50 s | p90 s | max s |",
        "|---|---|---|---|",
        f"| stablemirror event rule: manifest PUT answered -> visible at destination | "
        f"{p50_event:.3f} | {quantile(event_s, 0.9):.3f} | {max(event_s):.3f} |",
        f"| push, then `skopeo copy` (exit) | {p50_manual:.3f} | "
        f"{quantile(manual_s, 0.9):.3f} | {max(manual_s):.3f} |",
        "",
        f"Target p50 ≤ 2 s: {p50_event:.3f} s, "
        f"{'PASS' if p50_event <= 2.0 else 'FAIL'}; event / skopeo copy p50: "
        f"{p50_event / p50_manual:.2f}x (lower is faster).",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--no-results", action="store_true", help="print only")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="stablemirror-repl-event-") as tmp:
        section = run(args, Path(tmp))
    print(section)
    if not args.no_results:
        update_results_file(args.results, "replication-event", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
