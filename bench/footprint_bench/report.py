"""bench/footprint.py's section of RESULTS.md (`footprint`): the table, the targets (each
judged on the median of the rounds) and every round's figures."""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
from typing import Any

from harness.common import REF, REPO_ROOT
from harness.results import command_line, table_head, table_row

from footprint_bench.measure import CENTER, NODE, PLACEMENTS

NODE_IDLE_MIB = 64.0  # node placement, idle process tree RSS, at most
NODE_STARTUP_S = 0.5  # node placement, start until /v2/ answers 200, at most
CENTER_IDLE_MIB = 160.0  # center placement with 2 workers, idle tree RSS, at most
STREAM_EXTRA_MIB = 64.0  # peak RSS - idle while one worker streams a large blob, at most


def label(placement: str, args: argparse.Namespace) -> str:
    return {NODE: "stablemirror node (`serve --role node --workers 1 --upstream URL`)",
            CENTER: f"stablemirror center (`serve --workers {args.workers}`)",
            REF: "docker-registry"}[placement]


def stat(rounds: list[dict[str, Any]], key: str, best: Any = min) -> tuple[float, float] | None:
    vals = [r[key] for r in rounds if key in r]
    return (statistics.median(vals), best(vals)) if vals else None


def cell(s: tuple[float, float] | None, p: int = 1) -> str:
    return "—" if s is None else f"{s[0]:.{p}f} ({s[1]:.{p}f})"


def verdict(s: tuple[float, float] | None, limit: float) -> str:
    return "n/a" if s is None else "PASS" if s[0] <= limit else "FAIL"


def target_rows(rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace
                ) -> list[tuple[str, str, str]]:
    node, center = rounds.get(NODE, []), rounds.get(CENTER, [])
    rows = []
    s = stat(node, "idle_rss_mib")
    rows.append((f"node idle RSS ≤ {NODE_IDLE_MIB:.0f} MiB", cell(s) + " MiB",
                 verdict(s, NODE_IDLE_MIB)))
    s = stat(node, "startup_s")
    rows.append((f"node `/v2/` ≤ {NODE_STARTUP_S} s after start", cell(s, 3) + " s",
                 verdict(s, NODE_STARTUP_S)))
    s = stat(center, "idle_rss_mib")
    rows.append((f"center {args.workers} workers idle RSS ≤ {CENTER_IDLE_MIB:.0f} MiB total",
                 cell(s) + " MiB", verdict(s, CENTER_IDLE_MIB)))
    for placement in (NODE, CENTER):
        s = stat(rounds.get(placement, []), "stream_extra_mib")
        rows.append((f"streaming ≤ {STREAM_EXTRA_MIB:.0f} MiB extra per worker ({placement})",
                     cell(s) + " MiB", verdict(s, STREAM_EXTRA_MIB)))
    return rows


def summary_lines(rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace
                  ) -> list[str]:
    out = table_head("Placement", "processes", "idle RSS MiB", "idle PSS MiB",
                     "`/v2/` after start s", "start-up CPU s",
                     "streaming: peak RSS - idle MiB", "streaming MB/s")
    for placement in PLACEMENTS:
        rs = rounds.get(placement, [])
        if not rs:
            out.append(table_row(label(placement, args), *["ERROR"] * 7))
            continue
        out.append(table_row(
            label(placement, args), str(max(r["procs"] for r in rs)),
            cell(stat(rs, "idle_rss_mib")), cell(stat(rs, "idle_pss_mib")),
            cell(stat(rs, "startup_s"), 3), cell(stat(rs, "startup_cpu_s"), 2),
            cell(stat(rs, "stream_extra_mib")), cell(stat(rs, "stream_mbps", max), 0)))
    return out


def report_markdown(run: Any, info: dict[str, str], started: dt.datetime, wall: float,
                    fatal: str | None) -> str:
    args, rounds = run.args, run.rounds
    loads = [r[k] for rs in rounds.values() for r in rs
             for k in ("startup_other_load", "stream_other_load")]
    out = [
        "## Footprint: memory and start-up time per placement",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} (wall time {wall:.0f} s)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}",
        f"- Reference: `{info['reference']}` (filesystem storage, log level error)",
        f"- Command: `cd {REPO_ROOT} && {command_line()}`",
        f"- stablemirror code: {run.code_line}; STABLEMIRROR_LOG_LEVEL=error; the node's "
        "upstream is a hosted docker-registry",
        f"- Method: {args.rounds} rounds, each placement started afresh per round (order "
        "rotating, `sync` first); `/v2/` time from just before the process is spawned until "
        "`GET /v2/` answers 200 (polled every 10 ms); idle RSS and PSS of the whole process "
        f"tree {args.idle_wait:g} s after that; then one GET (curl) of a {args.size_mib} MiB "
        "blob, pulled through the node from its upstream (cold) and from the center and "
        "docker-registry after an untimed push, with the tree's RSS sampled every 50 ms: "
        "streaming = peak RSS during the GET - idle RSS (one connection, so one worker "
        "serves it). Cells: median (best) of the rounds; targets are judged on the median.",
        f"- CPU used by other processes during start-ups and GETs: mean "
        f"{statistics.mean(loads) if loads else 0:.2f} cores, worst "
        f"{max(loads) if loads else 0:.2f}; start-ups or GETs above --max-other-load "
        f"({args.max_other_load:g} cores): {sum(x > args.max_other_load for x in loads)} of "
        f"{len(loads)} (kept: the median of the rounds stands for them)",
        "",
    ]
    if fatal:
        out += [f"**Run aborted:** `{fatal.splitlines()[0][:300]}`", ""]
    if run.errors:
        out += ["**Errors:**", ""] + [f"- `{e.splitlines()[0][:300]}`" for e in run.errors]
        out.append("")
    out += [*summary_lines(rounds, args), "", "Targets:", "",
            *table_head("Target", "Measured, median (best)", "Result")]
    out += [table_row(*r) for r in target_rows(rounds, args)]
    out += ["", "Where the memory and start-up time go, which targets the current design can "
            "meet and what an unmet one would take (the import floor, measured): "
            "`docs/footprint.md`."]
    out += ["", "<details><summary>Every round</summary>", ""]
    for placement in PLACEMENTS:
        for i, r in enumerate(rounds.get(placement, [])):
            out.append(
                f"- {placement} round {i + 1}: `/v2/` {r['startup_s']:.3f} s (start-up CPU "
                f"{r['startup_cpu_s']:.2f} s, other load {r['startup_other_load']:.2f}), idle "
                f"RSS {r['idle_rss_mib']:.1f} / PSS {r['idle_pss_mib']:.1f} MiB over "
                f"{r['procs']} processes; before the GET {r['before_get_mib']:.1f} MiB, peak "
                f"during it {r['stream_peak_mib']:.1f} MiB, {r['stream_mbps']:,.0f} MB/s, "
                f"{r['stream_cpu_s_per_gib']:.2f} CPU s/GiB, other load "
                f"{r['stream_other_load']:.2f}")
    out += ["", "</details>", ""]
    return "\n".join(out)
