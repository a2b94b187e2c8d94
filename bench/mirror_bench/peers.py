"""The report's tables that put stablemirror's mirror beside its peers (docker-registry in
proxy mode, nginx proxy_cache): the warm pull, and one table of every proxied measurement
with the ratios stablemirror / each peer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.common import SM, MiB
from harness.results import table_head, table_row

from mirror_bench.targets import MIRROR_LABEL, MIRRORS, PEERS, single_medians, single_rounds


def warm_table(warm: dict[str, Any] | None, size: int, rounds: int) -> list[str]:
    """docker-registry and stablemirror as before, then each further peer and its ratio."""
    if not (warm and warm.get(SM) and warm.get(PEERS[0])):
        return []
    best = {name: max(warm[name]) for name in MIRRORS if warm.get(name)}
    sm, ref = best[SM], best[PEERS[0]]
    extra = [p for p in PEERS[1:] if p in best]
    head = [f"{MIRROR_LABEL[PEERS[0]]} MB/s", f"{MIRROR_LABEL[SM]} MB/s",
            "stablemirror / docker-registry"]
    cells = [f"{ref:,.0f}", f"{sm:,.0f}", f"{sm / ref:.2f}x"]
    for p in extra:
        head += [f"{MIRROR_LABEL[p]} MB/s", f"stablemirror / {p}"]
        cells += [f"{best[p]:,.0f}", f"{sm / best[p]:.2f}x"]
    return [f"Warm (cached) pull of the same {size} MiB blob (curl, best of {rounds}):", "",
            *table_head(*head), table_row(*cells), ""]


def cold_cpu_per_gib(r: dict[str, Any], size_mib: int) -> float:
    """Mirror CPU s per GiB of one cold pull, the work it did after the response included."""
    return float(r.get("mirror_cpu_settled", r["mirror_cpu"])) / (size_mib / 1024)


# (label, value of one mirror's result, unit, higher is better)
Row = tuple[str, Callable[[dict[str, Any]], float | None], str, bool]


def _rows(size: int, clients: list[int], warm_rounds: int) -> list[tuple[str, Row]]:
    """(concurrency key or "warm", row) in table order."""
    blob_mb = size * MiB / 1e6

    def mbps(r: dict[str, Any]) -> float | None:
        return r["clients"] * blob_mb / r["wall"] if r.get("wall") else None

    def upstream(r: dict[str, Any]) -> float:
        return float(r["upstream_ratio"])

    rows: list[tuple[str, Row]] = [
        ("1", ("cold single pull, MB/s", mbps, "MB/s", True)),
        ("1", ("cold single pull, mirror CPU s/GiB", lambda r: cold_cpu_per_gib(r, size),
               "s/GiB", False)),
        ("1", ("cold single pull, upstream bytes / blob", upstream, "x", False)),
        ("warm", (f"warm pull, MB/s (curl, best of {warm_rounds})", lambda w: max(w) if w else None,
                  "MB/s", True)),
    ]
    for n in clients:
        rows += [(str(n), (f"{n} concurrent cold pulls, MB/s delivered (clients x blob / wall)",
                           mbps, "MB/s", True)),
                 (str(n), (f"{n} concurrent cold pulls, upstream bytes / blob", upstream, "x",
                           False))]
    return rows


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if unit == "MB/s" else f"{v:.2f}" + ("x" if unit == "x" else "")


def peers_table(data: dict[str, Any], size: int, clients: list[int], warm_rounds: int
                ) -> list[str]:
    conc, warm = data.get("concurrent", {}), data.get("warm") or {}
    if not conc and not warm:
        return []
    out = [
        f"stablemirror's mirror beside its peers, {size} MiB blobs, one upstream "
        "(ratios stablemirror / peer: above 1.00x is better for MB/s, below for CPU and "
        "upstream bytes):", "",
        *table_head("Measurement", *(MIRROR_LABEL[m] for m in MIRRORS),
                    *(f"stablemirror / {MIRROR_LABEL[p]}" for p in PEERS)),
    ]
    for key, (label, value, unit, higher) in _rows(size, clients, warm_rounds):
        results = warm if key == "warm" else conc.get(key, {})
        if not results:
            continue
        vals: dict[str, float | None] = {}
        cells = [label]
        for m in MIRRORS:
            r = results.get(m)
            vals[m] = None if not r else value(r)
            cell = _fmt(vals[m], unit)
            if key != "warm" and r and r["ok"] != r["clients"]:
                cell += f" ({r['ok']}/{r['clients']} correct)"
            cells.append(cell)
        for p in PEERS:
            sm, peer = vals.get(SM), vals.get(p)
            cells.append("—" if sm is None or not peer else f"{sm / peer:.2f}x"
                         + ("" if higher else " (lower is better)"))
        out.append(table_row(*cells))
    return [*out, ""]


def single_rounds_table(data: dict[str, Any], size: int) -> list[str]:
    """Every single cold pull (a fresh blob each round, the mirrors' order rotating): wall
    seconds, and the mirror's CPU s/GiB until the upstream went quiet."""
    rounds = single_rounds(data)
    if len(rounds) < 2:
        return []
    out = [f"Single cold pulls of a never-seen {size} MiB blob, one per mirror and round "
           "(the order rotates; wall s, mirror CPU s/GiB until the upstream went quiet; "
           "(noisy): other processes used more than the limit):", "",
           *table_head("Round", *(MIRROR_LABEL[m] for m in MIRRORS))]
    for i, row in enumerate(rounds):
        cells = [str(i + 1)]
        for m in MIRRORS:
            r = row.get(m)
            cells.append("—" if not r or not r.get("wall") else
                         f"{r['wall']:.2f} s, {cold_cpu_per_gib(r, size):.2f}"
                         + (" (noisy)" if r.get("noisy") else ""))
        out.append(table_row(*cells))
    med = single_medians(data)
    out.append(table_row("median", *(f"{med[m]:.2f} s" if m in med else "—" for m in MIRRORS)))
    return [*out, ""]
