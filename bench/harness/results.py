"""The results file (bench/RESULTS.md): one section per benchmark and mode, each between
`<!-- BEGIN mode -->` and `<!-- END mode -->`, replaced by the latest run; and the facts
about the machine and the command that every section starts with."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from harness.common import REPO_ROOT

RESULTS_HEADER = """# Benchmark results

Written by `bench/run.py` (see `bench/README.md`). Each section is replaced by the latest
run of that mode; both servers are measured in the same run, on the same machine, with the
same clients. Ratios are stablemirror / docker-registry (higher is better, except RSS).
Throughput is in MB/s = 10^6 bytes per second.
"""


def table_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def table_head(*columns: str) -> list[str]:
    """A markdown table's header row and the separator row under it."""
    return [table_row(*columns), "|" + "---|" * len(columns)]


def update_results_file(path: Path, mode: str, section: str) -> None:
    """Replace only this mode's section of RESULTS.md; a new "...full" section goes above
    its "...quick" counterpart (full above quick, mirror-full above mirror-quick)."""
    begin, end = f"<!-- BEGIN {mode} -->", f"<!-- END {mode} -->"
    block = f"{begin}\n{section.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_HEADER
    quick = f"<!-- BEGIN {mode.removesuffix('full')}quick -->"
    if begin in text and end in text:
        pre, _, rest = text.partition(begin)
        _, _, post = rest.partition(end)
        text = pre + block + post
    elif mode.endswith("full") and quick in text:
        pre, _, post = text.partition(quick)
        text = pre + block + "\n\n" + quick + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)



def machine_info() -> dict[str, str]:
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ref_ver = tool_output("docker-registry", "--version")
    wrk_ver = tool_output("wrk", "--version").split("Copyright")[0].strip()
    nginx_ver = tool_output("nginx", "-v").rpartition("/")[2]  # "nginx version: nginx/1.22.1"
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "cpu": cpu or platform.processor() or "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "reference": ref_ver,
        "wrk": wrk_ver or "?",
        "nginx": nginx_ver or "?",
    }


def tool_output(*argv: str) -> str:
    """What a tool prints (stdout, else stderr) when asked for its version; "?" if absent."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (proc.stdout or proc.stderr).strip() or "?"


def command_line() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        exe = os.path.relpath(exe, REPO_ROOT) if Path(exe).is_relative_to(REPO_ROOT) else exe
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO_ROOT)
    return shlex.join([exe, script, *sys.argv[1:]])



def curl_version() -> str:
    try:
        return subprocess.run(["curl", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split()[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"

