"""bench/mirror.py's section of RESULTS.md (`mirror-full` or `mirror-quick`): the tables,
the targets, the details, and notes worked out from the run's own figures."""

from __future__ import annotations

import datetime as dt
from typing import Any

from harness.common import REF, REPO_ROOT, MiB
from harness.results import command_line, curl_version, table_head, table_row

from mirror_bench.bench import Bench
from mirror_bench.peers import cold_cpu_per_gib, peers_table, single_rounds_table, warm_table
from mirror_bench.targets import (
    KIND_LABEL,
    MIRROR_LABEL,
    MIRRORS,
    PEERS,
    cold_label,
    cold_summary,
    target_rows,
)


def report_markdown(b: Bench, info: dict[str, str], started: dt.datetime, wall: float,
                    fatal: str | None) -> str:
    args, data = b.args, b.data
    mode = "quick" if args.quick else "full"
    size = args.size_mib
    loads = b.loads
    worst = max(loads) if loads else (0.0, "?")
    mean = sum(x for x, _ in loads) / len(loads) if loads else 0.0
    out = [
        f"## Mirror benchmarks, {mode} run",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} (wall time {wall:.0f} s)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}",
        f"- Reference: `{info['reference']}` (filesystem storage); clients: curl "
        f"({curl_version()}) for single pulls, threads on raw sockets "
        + ("hashing with sha256" if data.get("client_verify") else "counting bytes (not "
           "hashing; one untimed hashed curl download per mirror and pull checks the bytes)")
        + " for the proxied single and concurrent cold pulls",
        f"- Command: `cd {REPO_ROOT} && {command_line()}`",
        f"- stablemirror code: {data.get('code', '?')}",
        f"- Servers: stablemirror `serve --workers {args.workers}` (hosted upstream, and "
        "mirrors with `--upstream URL`), STABLEMIRROR_LOG_LEVEL=error; docker-registry "
        "log level error, access log off, filesystem storage (proxy mode: `proxy: remoteurl:`); "
        f"nginx {info.get('nginx', '?')} `proxy_cache` (keys_zone ai_mirror, "
        "`proxy_cache_valid 200 7d`, `proxy_cache_key $uri`, `proxy_cache_lock on`, buffering "
        f"on, `worker_processes {args.workers}`, access log off)",
        page_cache_line(data),
        f"- Load average before / after: {data.get('load_before', '?')} / "
        f"{data.get('load_after', '?')}; CPU used by other processes during the timed "
        f"measurements: mean {mean:.2f} cores, worst {worst[0]:.2f} ({worst[1]}); results "
        f"discarded and re-measured because other processes used more than "
        f"{args.max_other_load} cores: {b.guard.discarded}",
        f"- Parameters: blob {size} MiB (random, a never-seen one for every cold pull); cold: "
        f"{args.cold_rounds} rounds per upstream, direct and mirror pull of the same fresh blob "
        f"(order alternating), best total time and median TTFB reported; warm: best of "
        f"{args.warm_rounds} curl GETs; concurrent: {', '.join(map(str, args.clients))} "
        f"clients, upstream for warm and concurrent pulls: {KIND_LABEL[args.proxy_upstream]}"
        + (f"; paced-link rows: {', '.join(f'{x:g}' for x in args.links)} MB/s per connection "
           f"(bench/countproxy.py --rate) in front of {KIND_LABEL[args.link_upstream]}, for "
           "the direct pull and the mirror's fetch alike" if args.links else ""),
        "",
    ]
    if fatal:
        out += [f"**Run aborted:** `{fatal.splitlines()[0][:300]}`", ""]
    other_errors = [e for e in b.errors if e != fatal]
    if other_errors:
        out += ["**Errors** (these parts are missing below):", ""]
        out += [f"- `{e.splitlines()[0][:300]}`" for e in other_errors] + [""]
    out += cold_table(data.get("cold", {}), size)
    out += warm_table(data.get("warm"), size, args.warm_rounds)
    out += concurrent_table(data.get("concurrent", {}), size, args.clients)
    out += peers_table(data, size, args.clients, args.warm_rounds)
    out += single_rounds_table(data, size)
    rows = target_rows(data, args.clients)
    if rows:
        out += ["Targets:", "", *table_head("Target", "Measured", "Result")]
        out += [table_row(t, m, v) for t, m, v in rows]
        out.append("")
    out += ["<details><summary>Details</summary>", ""]
    out += cold_details(data.get("cold", {}), size)
    out += warm_details(data.get("warm"))
    out += concurrent_details(data.get("concurrent", {}), args.clients, size)
    rss = data.get("mirror_peak_rss_mib")
    if rss:
        out.append("- peak RSS (process tree) of the mirrors in the warm/concurrent phases: "
                   + ", ".join(f"{MIRROR_LABEL[m]} {rss[m]:.0f} MiB" for m in MIRRORS
                               if m in rss))
    out += ["", "</details>", ""]
    out += ["Notes:", "", *auto_notes(b)]
    if args.notes_text:
        out += [args.notes_text.strip()]
    out.append("")
    return "\n".join(out)


def auto_notes(b: Bench) -> list[str]:
    """What the numbers mean, worked out from this run's own figures."""
    data, args = b.data, b.args
    out: list[str] = []
    sha = data.get("sha256_mbps")
    size = args.size_mib * MiB
    if sha:
        floor = size / (sha * 1e6)
        bits = []
        for kind, cr in data.get("cold", {}).items():
            s = cold_summary(cr)
            if s and "@" not in kind:
                bits.append(f"{floor / s['direct_s']:.2f}x over {cold_label(kind)}")
        out.append(
            f"- SHA-256 of one stream runs at {sha:,.0f} MB/s on one core of this machine "
            f"(hashlib, measured in this run), so any mirror that verifies the digest before "
            f"it completes a response needs at least {floor:.2f} s for {args.size_mib} MiB, "
            f"whatever else it overlaps: a floor of "
            + (", ".join(bits) if bits else "?")
            + " for the loopback cold-pull ratio (direct pulls are sendfile(2) on loopback). "
            "The paced-link rows show where a link, not the CPU, is the limit.")
    conc = data.get("concurrent", {})
    for peer in PEERS:
        fetched = [(n, conc[str(n)][peer]) for n in [1, *args.clients]
                   if peer in conc.get(str(n), {})]
        if fetched:
            out.append(f"- {MIRROR_LABEL[peer]} fetched the blob " + ", ".join(
                f"{r['upstream_ratio']:.2f} times for {n} client{'s' if n > 1 else ''}"
                for n, r in fetched) + ".")
    if conc.get("1", {}).get(REF):
        out.append("- docker-registry's proxy opens one upstream stream per client, plus one to "
                   "store its own copy; nginx with `proxy_cache_lock on` lets one request fill "
                   "the cache and holds the others until it is complete (their TTFB is at least "
                   "the whole fetch, rounded up to nginx's 500 ms cache-lock re-check timer).")
    if any(str(n) in conc for n in args.clients):
        out.append("- Concurrent pulls: " + (
            "every client thread hashes all it receives, on the same 2 cores as the servers, "
            "so wall times include the clients' SHA-256 work (N x the blob) for all mirrors "
            "alike." if data.get("client_verify") else
            "the client threads only count bytes (`--client-verify` makes them hash), so the "
            "wall times are the mirrors' and the kernel's copying, not the clients' SHA-256."))
    out.append("- Each cold pull gets a blob its mirror has never seen (pushed to the upstream "
               "just before); the upstream has it in the page cache, and `sync` runs before "
               "every timed pull.")
    return out



def cold_table(cold: dict[str, Any], size: int) -> list[str]:
    if not cold:
        return []
    out = [
        f"Cold pull of a {size} MiB blob, mirror vs. direct from the upstream (curl, "
        "`-o /dev/null`):",
        "",
        *table_head("Upstream", "direct s", "mirror s", "mirror / direct", "direct MB/s",
                    "mirror MB/s", "direct TTFB ms", "mirror TTFB ms", "TTFB delta"),
    ]
    for kind, cr in cold.items():
        s = cold_summary(cr)
        if s is None:
            out.append(f"| {cold_label(kind)} | ERROR | | | | | | | |")
            continue
        nd = " (noisy)" if s["direct_noisy"] else ""
        nm = " (noisy)" if s["mirror_noisy"] else ""
        out.append(
            f"| {cold_label(kind)} | {s['direct_s']:.3f}{nd} | {s['mirror_s']:.3f}{nm} | "
            f"{s['ratio']:.2f}x | {s['direct_mbps']:,.0f} | {s['mirror_mbps']:,.0f} | "
            f"{s['direct_ttfb_ms']:.1f} | {s['mirror_ttfb_ms']:.1f} | "
            f"{s['ttfb_delta_ms']:+.1f} ms |")
    return [*out, ""]


def concurrent_table(conc: dict[str, Any], size: int, clients: list[int]) -> list[str]:
    if not conc:
        return []

    def f(v: float | None, scale: float = 1.0, p: int = 2) -> str:
        return "—" if v is None else f"{v * scale:.{p}f}"

    out = [
        f"Concurrent cold pulls of one never-seen {size} MiB blob (upstream bytes counted "
        "by a proxy between each mirror and the upstream):",
        "",
        *table_head("Clients", "Mirror", "upstream bytes / blob", "upstream blob GETs",
                    "wall s", "client median s", "client max s", "TTFB median ms",
                    "correct clients", "mirror CPU s", "sha256 check"),
    ]
    for n in [1, *clients]:
        for name in MIRRORS:
            r = conc.get(str(n), {}).get(name)
            if r is None:
                continue
            out.append(
                f"| {n} | {MIRROR_LABEL[name]} | {r['upstream_ratio']:.2f}x | "
                f"{r['upstream_blob_gets']} | {f(r['wall'])}"
                f"{' (noisy)' if r['noisy'] else ''} | {f(r['client_median'])} | "
                f"{f(r['client_max'])} | {f(r['ttfb_median'], 1000, 1)} | "
                f"{r['ok']}/{n} | {r['mirror_cpu']:.1f} | {r.get('verify', '?')} |")
    return [*out, ""]


def cold_details(cold: dict[str, Any], size: int) -> list[str]:
    out: list[str] = []
    for kind, cr in cold.items():
        for via in ("direct", "mirror"):
            rs = cr.get(via) or []
            if rs:
                out.append(
                    f"- cold, upstream {cold_label(kind)}, {via}: " + "; ".join(
                        f"{x['total']:.3f} s / TTFB {x['ttfb'] * 1000:.1f} ms"
                        + (" (noisy)" if cr["noisy"][via][i] else "")
                        for i, x in enumerate(rs)))
        s = cold_summary(cr)
        if s:
            out.append(f"- cold, upstream {cold_label(kind)}: mirror / direct per round "
                       + ", ".join(f"{x:.2f}x" for x in s["paired_ratios"]))
        cpu = cr.get("cpu_s", {})
        gib = len(cr.get("mirror") or []) * size / 1024
        if cpu and gib:
            bits = [f"{n} {c / gib:.2f}" for n, c in sorted(cpu.get("mirror", {}).items())]
            out.append(f"- cold, upstream {cold_label(kind)}: CPU s/GiB during mirror pulls: "
                       + ", ".join(bits))
            bits = [f"{n} {c / gib:.2f}" for n, c in sorted(cpu.get("direct", {}).items())]
            out.append(f"- cold, upstream {cold_label(kind)}: CPU s/GiB during direct pulls: "
                       + ", ".join(bits))
        prof = cr.get("profile")
        if prof and "summary" in prof:
            out.append(f"- cold, upstream {cold_label(kind)}: one more (untimed) mirror pull "
                       f"under py-spy took {prof['total']:.3f} s; stacks in `{prof['file']}`, "
                       f"summary in `{prof['summary']}`")
    return out


def warm_details(warm: dict[str, Any] | None) -> list[str]:
    if not warm:
        return []
    out: list[str] = []
    for name in MIRRORS:
        if warm.get(name):
            out.append(f"- warm via {MIRROR_LABEL[name]}: " + ", ".join(
                f"{v:,.0f}" + (" (noisy)" if warm["noisy"][name][i] else "")
                for i, v in enumerate(warm[name])) + " MB/s")
    if "upstream_blob_gets" in warm:
        names = [m for m in MIRRORS if m in warm["upstream_blob_gets"]]
        out.append("- warm: upstream blob GETs during the warm pulls ("
                   + " / ".join(MIRROR_LABEL[m] for m in names) + "): "
                   + " / ".join(str(warm["upstream_blob_gets"][m]) for m in names)
                   + "; all upstream bytes (health checks included): "
                   + " / ".join(str(warm["upstream_bytes"].get(m)) for m in names))
    return out


def concurrent_details(conc: dict[str, Any], clients: list[int], size: int) -> list[str]:
    out: list[str] = []
    for n in [1, *clients]:
        for name in MIRRORS:
            r = conc.get(str(n), {}).get(name)
            if r:
                out.append(
                    f"- {n} client{'s' if n > 1 else ''} via {MIRROR_LABEL[name]}: "
                    f"{r['upstream_bytes']:,} upstream "
                    f"bytes, {r['upstream_requests']} upstream requests, Range headers "
                    f"{r['upstream_ranges'] or 'none'}, TTFB max "
                    f"{(r['ttfb_max'] or 0) * 1000:.1f} ms, CPU s mirror "
                    f"{r['mirror_cpu']:.1f} / upstream {r['upstream_cpu']:.1f} / counting proxy "
                    f"{r['proxy_cpu']:.1f}, mirror CPU until the upstream went quiet "
                    f"{r.get('mirror_cpu_settled', 0):.2f} s"
                    + (f" ({cold_cpu_per_gib(r, size):.2f} s/GiB)" if n == 1 else "")
                    + f", other load {r['other_load']:.2f} cores"
                    + (f", errors {r['errors']}" if r["errors"] else ""))
    return out


def page_cache_line(data: dict[str, Any]) -> str:
    """The machine's page-cache write rates at the start and end (harness/pagecache.py)."""
    def rates(key: str) -> str:
        r = data.get(key)
        return "?" if not r else (f"{r['fresh_mbps']:,.0f} MB/s into pages not used lately, "
                                  f"{r['reused_mbps']:,.0f} MB/s into pages just freed")
    return ("- Page-cache writes of one blob's size (bench/harness/pagecache.py; the copy a "
            "storing mirror's client waits for, docs/cold-pull.md): before the run "
            f"{rates('page_cache_before')}; after it {rates('page_cache_after')}"
            + ("" if not (st := data.get("steady_page_cache")) else
               f". Run with --steady-page-cache: {st['fill_gib']:.1f} GiB of page cache "
               f"kept, {st['damon_paused']} DAMON pageout daemon(s) paused for the run"))
