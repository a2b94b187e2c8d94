"""bench/run.py's report: the table printed and written to RESULTS.md (`full` or `quick`
section, or `...-reference` / `...-stablemirror` for a single server), the targets, and the
details (every round, latency, memory, CPU cost and other load per phase)."""

from __future__ import annotations

import argparse
import datetime as dt

from harness.common import REF, REPO_ROOT, SM
from harness.nginx import NGINX
from harness.results import command_line, table_head, table_row
from harness.servers import SM_COMMAND

from registry_bench.measure import Results

# (metric key, label, unit, higher_is_better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("push_mono", "Monolithic push (POST + PUT)", "MB/s", True),
    ("push_chunked", "Chunked push (PATCH x N + PUT)", "MB/s", True),
    ("blob_get", "Blob GET (best of N)", "MB/s", True),
    ("manifest_tag", "Manifest GET by tag", "req/s", True),
    ("manifest_digest", "Manifest GET by digest", "req/s", True),
    ("peak_rss", "Peak RSS, process tree", "MiB", False),
]
# (label, metric keys, minimum ratio stablemirror / peer, peer)
TARGETS: list[tuple[str, list[str], float, str]] = [
    ("blob GET", ["blob_get"], 1.0, REF),
    ("blob GET", ["blob_get"], 0.9, NGINX),  # nginx sendfile: the physical limit
    ("push", ["push_mono", "push_chunked"], 1.0, REF),
    ("manifest GET", ["manifest_tag", "manifest_digest"], 3.0, REF),
]


def fmt_val(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "req/s":
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def target_rows(res: Results) -> list[tuple[str, str, float, float | None, str]]:
    """(target, metric label, need, ratio, verdict); a target against nginx names it."""
    rows = []
    for label, metrics, need, peer in TARGETS:
        for m in metrics:
            r = res.ratio(m, peer)
            mlabel = next(lbl for k, lbl, _, _ in METRICS if k == m)
            verdict = "n/a" if r is None else "PASS" if r >= need else "FAIL"
            target = f"{label} ≥ {need:.1f}x" + (" nginx" if peer == NGINX else "")
            rows.append((target, mlabel, need, r, verdict))
    return rows


def table_lines(res: Results, servers: list[str]) -> list[str]:
    head = ["Metric", "Unit", *servers]
    if REF in servers and SM in servers:
        head.append("stablemirror / docker-registry")
    lines = table_head(*head)
    for key, label, unit, higher in METRICS:
        row = [label, unit]
        for s in servers:
            err = res.errors.get(key, {}).get(s)
            v = res.values.get(key, {}).get(s)
            cell = "ERROR" if err and v is None else fmt_val(v, unit)
            if res.noisy.get(key, {}).get(s):
                cell += " (noisy)"
            row.append(cell)
        if len(head) > len(row):
            r = res.ratio(key)
            row.append("—" if r is None else f"{r:.2f}x" + ("" if higher else " (lower is better)"))
        lines.append(table_row(*row))
    return lines + nginx_row(res, servers, len(head))


def nginx_row(res: Results, servers: list[str], columns: int) -> list[str]:
    """Each server's blob GET as a fraction of nginx's sendfile of the same file."""
    ngx = res.values.get("blob_get", {}).get(NGINX)
    if not ngx:
        return []
    cells = [f"Blob GET / nginx sendfile of the same file ({ngx:,.1f} MB/s)", "x of nginx"]
    for s in servers:
        v = res.values.get("blob_get", {}).get(s)
        cells.append("—" if v is None else f"{v / ngx:.2f}x")
    return [table_row(*cells, *["—"] * (columns - len(cells)))]



PHASES = [
    # phase, label, unit of work, CPU cost unit
    ("push_mono", "monolithic push", "bytes", "CPU s/GiB"),
    ("push_chunked", "chunked push", "bytes", "CPU s/GiB"),
    ("blob_get", "blob GET", "bytes", "CPU s/GiB"),
    ("manifest_tag", "manifest GET by tag", "requests", "CPU us/req"),
    ("manifest_digest", "manifest GET by digest", "requests", "CPU us/req"),
]


def foreign_load(res: Results, phase: str, server: str) -> float | None:
    cpu_wall = res.extra.get("foreign", {}).get(phase, {}).get(server)
    if not cpu_wall or cpu_wall[1] <= 0:
        return None
    return float(cpu_wall[0] / cpu_wall[1])


def foreign_summary(res: Results) -> str:
    loads = [
        (foreign_load(res, ph, s) or 0.0, ph, s)
        for ph, d in res.extra.get("foreign", {}).items()
        for s in d
    ]
    if not loads:
        return "?"
    worst = max(loads)
    mean = sum(x for x, _, _ in loads) / len(loads)
    return f"mean {mean:.2f} cores, worst {worst[0]:.2f} ({worst[2]} {worst[1]})"


def cpu_cost(res: Results, phase: str, server: str) -> float | None:
    cpu: float | None = res.extra.get("cpu_s", {}).get(phase, {}).get(server)
    done: float | None = res.extra.get("units", {}).get(phase, {}).get(server)
    if cpu is None or not done:
        return None
    unit = next(u for p, _, u, _ in PHASES if p == phase)
    return cpu / (done / (1 << 30)) if unit == "bytes" else cpu / done * 1e6


def report_markdown(
    args: argparse.Namespace,
    res: Results,
    servers: list[str],
    info: dict[str, str],
    started: dt.datetime,
    wall: float,
) -> str:
    mode = "quick" if args.quick else "full"
    out = [
        f"## {mode.capitalize()} run",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} (wall time {wall:.0f} s)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}",
        f"- Reference: `{info['reference']}` (filesystem storage); load generator: {info['wrk']}",
        f"- Command: `cd {REPO_ROOT} && {command_line()}`",
        (
            "- Server logging: errors only (docker-registry log.level error, access log off; "
            "stablemirror STABLEMIRROR_LOG_LEVEL=error)"
            if args.server_logs == "quiet"
            else "- Server logging: each server's default (info level with access log lines)"
        ),
        f"- Load average before / after the run: {res.extra.get('load_before', '?')} / "
        f"{res.extra.get('load_after', '?')}; CPU used by other processes during the timed "
        f"runs: {foreign_summary(res)}; results discarded and re-measured because other "
        f"processes used more than {args.max_other_load} cores: {res.discarded}"
        + (
            f"; (noisy) marks a figure that was kept after {args.noisy_retries} such retries"
            if res.noisy
            else ""
        ),
        f"- Parameters: blob {args.size_mib} MiB; pushes best of {args.push_rounds} "
        f"(fresh random data each), PATCH chunks {args.chunk_mib} MiB; blob GET best of "
        f"{args.get_rounds}; wrk -t{args.wrk_threads} -c{args.wrk_conns} -d{args.wrk_duration}s "
        f"best of {args.wrk_rounds} (after {args.wrk_warmup}s untimed warm-up per URL); "
        f"server order alternates between rounds; stablemirror --workers {args.workers}"
        + (
            ""
            if args.phases == {"push", "get", "manifest"}
            else f"; phases: {','.join(sorted(args.phases))}"
        ),
        *(
            [f"- Server under test started as: `{args.stablemirror_cmd}`"]
            if args.stablemirror_cmd != SM_COMMAND and SM in servers
            else []
        ),
        "",
        *table_lines(res, servers),
        "",
    ]
    if REF in servers and SM in servers:
        out += [
            "Targets (ratio stablemirror / docker-registry, or / nginx where named):",
            "",
            *table_head("Target", "Metric", "Measured", "Result"),
        ]
        for target, mlabel, _, r, verdict in target_rows(res):
            meas = "—" if r is None else f"{r:.2f}x"
            out.append(table_row(target, mlabel, meas, verdict))
        out.append("")
    out += ["<details><summary>Details</summary>", ""]
    out += ["All rounds (the table shows the best):", ""]
    for key, label, unit, _ in METRICS:
        for s in [*servers, NGINX] if key == "blob_get" else servers:
            runs = res.samples.get(key, {}).get(s)
            if runs:
                flags = res.sample_noisy.get(key, {}).get(s, [])
                vals = [
                    fmt_val(x, unit) + (" (noisy)" if i < len(flags) and flags[i] else "")
                    for i, x in enumerate(runs)
                ]
                out.append(f"- {label}, {s}: " + ", ".join(vals) + f" {unit}")
    out.append("")
    for s in servers:
        bits = []
        if s in res.notes.get("content", {}):
            bits.append(f"full GET digest check: {res.notes['content'][s]}")
        if s in res.notes.get("range", {}):
            bits.append(f"Range GET check: {res.notes['range'][s]}")
        for kind in ("tag", "digest"):
            for w in res.extra.get("wrk", {}).get(kind, {}).get(s, []):
                lat = w["latency_ms"]
                bits.append(
                    f"wrk by {kind}: {w['requests']} requests, p50 {lat.get('p50', 0):.2f}"
                    f" ms, p99 {lat.get('p99', 0):.2f} ms"
                )
        bits.append(f"startup {res.extra.get('startup_s', {}).get(s, 0):.2f} s")
        bits.append(f"idle RSS {res.extra.get('idle_rss_mib', {}).get(s, 0):.0f} MiB")
        bits.append(
            f"peak tree PSS (shared pages split between processes) "
            f"{res.extra.get('peak_pss_mib', {}).get(s, 0):.0f} MiB"
        )
        bits.append(
            f"sum of per-process VmHWM {res.extra.get('hwm_sum_mib', {}).get(s, 0):.0f} MiB"
            f" over up to {res.extra.get('max_procs', {}).get(s, 0)} processes"
        )
        out.append(f"- **{s}**: " + "; ".join(bits))
    if NGINX in res.values.get("blob_get", {}):
        cost = cpu_cost(res, "blob_get", NGINX)
        out.append(f"- **nginx** (sendfile of {res.extra.get('nginx_file', '?')}, "
                   f"`sendfile on; tcp_nopush on;`, `worker_processes {args.workers}`): "
                   f"full GET digest check: {res.notes.get('content', {}).get(NGINX, '?')}; "
                   f"Range GET check: {res.notes.get('range', {}).get(NGINX, '?')}; blob GET "
                   f"CPU {'?' if cost is None else f'{cost:.2f}'} s/GiB")
    out += [
        "",
        "Server CPU cost (whole process tree, timed runs only), peak tree RSS, and CPU used by"
        " other processes while that server was measured (in cores, averaged), per phase:",
        "",
        *table_head(
            "Phase",
            "Cost unit",
            *(col for s in servers for col in (f"{s} cost", f"{s} RSS MiB", "other load")),
        ),
    ]
    for ph, label, _, cost_unit in PHASES:
        cells = []
        for s in servers:
            cost = cpu_cost(res, ph, s)
            rss = res.extra.get("phase_rss_mib", {}).get(f"{s}/{ph}")
            other = foreign_load(res, ph, s)
            cells += [
                "—" if cost is None else f"{cost:,.2f}" if cost < 100 else f"{cost:,.0f}",
                "—" if rss is None else f"{rss:.0f}",
                "—" if other is None else f"{other:.2f}",
            ]
        out.append(table_row(label, cost_unit, *cells))
    errs = [(m, s, e) for m, d in res.errors.items() for s, e in d.items()]
    if errs:
        out += ["", "Errors:", ""]
        out += [f"- {s} / {m}: `{e.splitlines()[0][:300]}`" for m, s, e in errs]
    out += ["", "</details>", ""]
    return "\n".join(out)
