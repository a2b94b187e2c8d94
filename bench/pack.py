#!/usr/bin/env python3
"""`stablemirror pack` against oras-py pushing the same files to the same server.

    .venv/bin/python bench/pack.py            # a 4 GiB model directory, 2 rounds
    .venv/bin/python bench/pack.py --quick    # 256 MiB, 2 rounds

A synthetic safetensors model (8 shards of random tensors under valid headers, plus
config.json, tokenizer.json, README.md) is written once; its files stay in the page cache.
Each measurement gets a fresh stablemirror server (--workers 2) on a fresh data dir, so
neither client finds blobs the other left behind; the two clients alternate, their order
swapped each round. Timed: the whole command, as a user runs it (`python -m stablemirror
pack DIR ...` and a `python -c` that calls oras-py's `Registry.push` with the same files),
from start to exit. MB/s = 10^6 bytes of file content per second. Writes its own section
of bench/RESULTS.md (between the `pack` markers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from harness.common import REPO_ROOT, RESULTS_MD, MiB
from harness.results import command_line, machine_info, table_head, update_results_file
from harness.servers import Server, stablemirror_server
from harness.session import work_dir

SECTION = "pack"
TIMEOUT = 1800.0
ORAS_PUSH = """
import os, sys
import oras.provider
host, repo, directory = sys.argv[1:4]
os.chdir(directory)
registry = oras.provider.Registry(hostname=host, insecure=True, tls_verify=False)
registry.push(target=f"{host}/{repo}", files=sorted(os.listdir(".")), quiet=True)
"""


def write_model(root: Path, total: int, shards: int = 8) -> int:
    """The model directory; its size in bytes."""
    root.mkdir()
    rng = random.Random(14)
    per = total // shards // 2 * 2
    for i in range(shards):
        rows = per // 2 // 4096
        size = rows * 4096 * 2
        header = {"__metadata__": {"format": "pt"},
                  f"layers.{i}.weight": {"dtype": "F16", "shape": [rows, 4096],
                                         "data_offsets": [0, size]}}
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (root / f"model-{i + 1:05d}-of-{shards:05d}.safetensors").open("wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for _ in range(size // MiB):
                f.write(rng.randbytes(MiB))
            f.write(rng.randbytes(size % MiB))
    (root / "config.json").write_text('{"model_type": "llama", "torch_dtype": "float16"}')
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {str(i): i for i in range(5000)}}))
    (root / "README.md").write_text("# synthetic model for bench/pack.py\n")
    return sum(p.stat().st_size for p in root.iterdir())


def fresh_server(work: Path, name: str, workers: int) -> Server:
    server = stablemirror_server(work, name, sys.executable, workers, log_level="warning")
    try:
        server.start(None, timeout=60)
    except BaseException:
        server.stop()
        raise
    return server


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr[-2000:]}")
    return seconds


def startup_seconds() -> float:
    """The CLI's own start-up (`stablemirror pack --help`), best of 3: a fixed cost that a
    small directory feels and a large one does not."""
    return min(timed([sys.executable, "-m", "stablemirror", "pack", "--help"])
               for _ in range(3))


def measure(size: int, rounds: int, workers: int, jobs: int) -> tuple[dict[str, list[float]],
                                                                      int]:
    results: dict[str, list[float]] = {"pack": [], "oras": [], "startup": [startup_seconds()]}
    with work_dir("sm-bench-pack-", None, keep=False) as work:
        model = work / "model"
        total = write_model(model, size)
        for p in model.iterdir():  # into the page cache, for both clients alike
            p.read_bytes() if p.stat().st_size < 64 * MiB else _drain(p)
        n = 0
        for r in range(rounds):
            for client in (("pack", "oras") if r % 2 == 0 else ("oras", "pack")):
                n += 1
                server = fresh_server(work, f"server-{n}", workers)
                host = f"127.0.0.1:{server.port}"
                try:
                    if client == "pack":
                        argv = [sys.executable, "-m", "stablemirror", "pack", str(model),
                                f"{host}/bench/model:r{r}", "--no-progress",
                                "--jobs", str(jobs)]
                    else:
                        argv = [sys.executable, "-c", ORAS_PUSH, host, f"bench/model:r{r}",
                                str(model)]
                    results[client].append(total / timed(argv) / 1e6)
                finally:
                    server.stop()
                    shutil.rmtree(work / f"server-{n}-data", ignore_errors=True)
    return results, total


def _drain(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(8 * MiB):
            pass


def render(results: dict[str, list[float]], total: int, rounds: int, workers: int,
           jobs: int, wall: float) -> str:
    info = machine_info()
    pack, oras = max(results["pack"]), max(results["oras"])
    lines = [
        "## pack: `stablemirror pack` vs oras-py push of the same model directory",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC (wall time {wall:.0f} s)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}",
        f"- Command: `cd {REPO_ROOT} && {command_line()}`",
        f"- Parameters: {total / MiB:,.0f} MiB in 11 files (8 safetensors shards of random "
        f"F16, 3 small files), page-cached; per measurement a fresh stablemirror "
        f"--workers {workers} on a fresh data dir; {rounds} rounds, clients alternating; "
        f"pack --jobs {jobs}; oras-py {_oras_version()} `Registry.push` (one blob at a time, "
        "monolithic PUT); whole command timed, start to exit",
        "",
        *table_head("Client", "best MB/s", "all runs MB/s", "vs oras-py"),
        f"| stablemirror pack | {pack:,.0f} | "
        f"{', '.join(f'{x:,.0f}' for x in results['pack'])} | {pack / oras:.2f}x |",
        f"| oras-py push | {oras:,.0f} | "
        f"{', '.join(f'{x:,.0f}' for x in results['oras'])} | 1.00x |",
        "",
        f"Of each pack run, {results['startup'][0]:.2f} s is the CLI starting "
        "(`stablemirror pack --help`, best of 3; cli/entry.py): a fixed cost that "
        "the 256 MiB run feels and the 4 GiB run hardly does. Both clients read each file "
        "twice (once to hash, once to send); pack hashes several files at once and "
        "uploads up to --jobs blobs in parallel while later files are still being hashed.",
    ]
    return "\n".join(lines) + "\n"


def _oras_version() -> str:
    from importlib.metadata import version

    return version("oras")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB model directory")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="stablemirror --workers")
    parser.add_argument("--jobs", type=int, default=4, help="pack --jobs")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    parser.add_argument("--results", default=str(RESULTS_MD), help="markdown file to update")
    args = parser.parse_args()
    size = (args.size_mib or (256 if args.quick else 4096)) * MiB
    started = time.monotonic()
    results, total = measure(size, args.rounds, args.workers, args.jobs)
    section = render(results, total, args.rounds, args.workers, args.jobs,
                     time.monotonic() - started)
    print(f"<!-- BEGIN {SECTION} -->\n{section}<!-- END {SECTION} -->\n")
    if not args.no_write:
        update_results_file(Path(args.results), SECTION, section)


if __name__ == "__main__":
    main()
