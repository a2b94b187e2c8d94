"""Cold pulls: a never-seen blob through a stablemirror mirror vs. directly from its upstream
(hosted stablemirror or docker-registry, optionally behind a pacing proxy), and the optional
py-spy profile of one more such pull."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.common import HOST, log
from harness.data import Blob
from harness.servers import Server
from harness.timing import settle
from harness.transfers import curl_get, push_monolithic, verify_blob_get

from mirror_bench.bench import Bench, ServerSet
from mirror_bench.clients import warm_up
from mirror_bench.targets import REPO, cold_label


def run_cold(b: Bench, kind: str, link: float = 0.0) -> None:
    """Cold pull of a never-seen blob: through a stablemirror mirror vs. directly from the
    upstream (`kind` names the upstream).  A round pushes one fresh blob and pulls it both
    ways (order alternating); a repeated mirror pull gets a new blob of its own.  With `link`
    (MB/s), both the direct pull and the mirror's upstream fetch pass one pacing proxy."""
    args = b.args
    key = f"{kind}@{link:g}" if link else kind
    owner = f"cold-{key}"
    out: dict[str, Any] = {"direct": [], "mirror": [], "noisy": {"direct": [], "mirror": []}}
    b.data.setdefault("cold", {})[key] = out
    ss = ServerSet(b)
    try:
        tag = f"-{link:g}" if link else ""
        up_name = f"{kind}-upstream{tag}"
        up = ss.start(b.upstream_server(kind, up_name))
        pacer = ss.proxy(f"link{tag}", up.port, link) if link else None
        up_port = pacer.port if pacer else up.port  # where pulls of the upstream go
        mirror = ss.start(b.sm_server(f"sm-mirror-of-{kind}{tag}",
                                      upstream=f"http://{HOST}:{up_port}"))
        warm_up(up.port, [up_port, mirror.port])
        cpu_sum: dict[str, dict[str, float]] = {"direct": {}, "mirror": {}}

        for r in range(args.cold_rounds):
            blob0 = b.pool.take(owner)
            push_monolithic(up.port, REPO, blob0, b.xfer_timeout)
            order = ["direct", "mirror"] if r % 2 == 0 else ["mirror", "direct"]
            for via in order:
                port = up_port if via == "direct" else mirror.port

                def prep(attempt: int, via: str = via, blob0: Blob = blob0) -> Blob:
                    if via == "direct" or attempt == 0:
                        return blob0  # the direct pull never touches the mirror
                    blob = b.pool.take(owner)  # a repeat: the mirror has seen blob0
                    push_monolithic(up.port, REPO, blob, b.xfer_timeout)
                    return blob

                def pull(blob: Blob, port: int = port) -> dict[str, float]:
                    return curl_get(port, REPO, blob, b.xfer_timeout)

                row, win, noisy = b.measure(f"cold-{via}", f"cold {key} {via}", ss.pids,
                                            prep, pull)
                row["round"] = r
                row["other_load"] = win.other
                row["cpu"] = win.cpu
                out[via].append(row)
                out["noisy"][via].append(noisy)
                for n, c in win.cpu.items():
                    cpu_sum[via][n] = cpu_sum[via].get(n, 0.0) + c
                log(f"cold {cold_label(key):22s} {via:6s}: {row['total']:.3f}s "
                    f"({row['mbps']:7.1f} MB/s), TTFB {row['ttfb'] * 1000:6.1f} ms"
                    + (" (noisy)" if noisy else ""))
            ss.check_alive()
        out["cpu_s"] = cpu_sum
        # correctness: a full hashed GET of a fresh blob, direct and (cold) through the mirror
        blob = b.pool.take(owner)
        push_monolithic(up.port, REPO, blob, b.xfer_timeout)
        out["verify"] = {
            "direct": verify_blob_get(up_port, REPO, blob, b.xfer_timeout),
            "mirror (cold)": verify_blob_get(mirror.port, REPO, blob, b.xfer_timeout),
            "mirror (cached)": verify_blob_get(mirror.port, REPO, blob, b.xfer_timeout),
        }
        log(f"cold {cold_label(key)}: sha256 checks {out['verify']}")
        if args.profile:
            out["profile"] = profile_cold(b, key, up, mirror, owner)
        ss.check_alive()
    finally:
        ss.stop()


def profile_cold(b: Bench, kind: str, up: Server, mirror: Server, owner: str) -> dict[str, Any]:
    """One extra (untimed) cold pull through the mirror under py-spy; raw collapsed stacks."""
    prof_dir = Path(b.args.profile)
    prof_dir.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy", path=str(Path(b.args.python).parent)) or shutil.which("py-spy")
    if not spy:
        return {"error": "py-spy not found"}
    blob = b.pool.take(owner)
    push_monolithic(up.port, REPO, blob, b.xfer_timeout)
    settle()
    out_path = prof_dir / f"cold-mirror-of-{kind}.txt"
    argv = [spy, "record", "--pid", str(mirror.pid), "--subprocesses", "--nonblocking",
            "--threads", "--rate", str(b.args.profile_rate), "--format", "raw", "-o",
            str(out_path), "--duration", str(int(b.xfer_timeout))]
    if b.args.profile_idle:
        argv.append("--idle")
    spy_log = (b.work / f"py-spy-{kind}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=spy_log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        time.sleep(2.0)  # py-spy attaches to every worker
        row = curl_get(mirror.port, REPO, blob, b.xfer_timeout)
        time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        spy_log.close()
    summary = summarize_profile(out_path)
    summary_path = out_path.with_suffix(".summary.txt")
    summary_path.write_text("\n".join(summary) + "\n")
    log(f"profiled cold pull via mirror of {kind}: {row['total']:.3f}s -> {out_path}\n  "
        + "\n  ".join(summary[:12]))
    return {"file": str(out_path), "summary": str(summary_path), "total": row["total"],
            "ttfb": row["ttfb"], "top": summary[:8]}


def summarize_profile(path: Path, top: int = 25) -> list[str]:
    """Samples per thread, and the hottest frames (self and inclusive), of py-spy raw output.
    A C builtin (os.pread, os.fsync, socket I/O inside uvloop) shows as its Python caller."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError), path.open() as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [x for x in stack.split(";") if not x.startswith("process ")]
            thread = frames[0] if frames and frames[0].startswith("thread ") else "?"
            frames = [x for x in frames if not x.startswith("thread ")]
            threads[thread] = threads.get(thread, 0) + n
            if frames:
                self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
            for fr in {x.rsplit(":", 1)[0] + ")" if ":" in x else x for x in frames}:
                incl[fr] = incl.get(fr, 0) + n
    if not total:
        return ["no samples"]

    def pct(v: int) -> str:
        return f"{v:6d} {100 * v / total:5.1f}%"

    out = [f"{total} samples (CPU only unless --profile-idle); per thread:"]
    out += [f"  {pct(v)} {k}" for k, v in sorted(threads.items(), key=lambda x: -x[1])[:10]]
    out.append("hottest frames (self):")
    out += [f"  {pct(v)} {k}" for k, v in sorted(self_n.items(), key=lambda x: -x[1])[:top]]
    out.append("stablemirror frames (inclusive):")
    out += [f"  {pct(v)} {k}" for k, v in sorted(incl.items(), key=lambda x: -x[1])
            if "stablemirror/" in k and "__main__" not in k and "cli.py" not in k][:top]
    return out

