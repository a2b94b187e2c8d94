"""`stablemirror status`: a terminal summary of a running server, from /status and /metrics.

Totals are since the server started (counters reset with it); a rate needs Prometheus.
Exit code 0 when the server is ready, 2 when it answers but is not ready, 1 when it does
not answer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from stablemirror.config import load_settings

TIMEOUT = 10.0


class Samples:
    """Parsed /metrics samples: name -> [(labels, value)]."""

    def __init__(self, text: str) -> None:
        self.by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.by_name[s.name].append((s.labels, s.value))

    def total(self, name: str, **match: str) -> float:
        return sum(v for labels, v in self.by_name.get(name, [])
                   if all(labels.get(k) == want for k, want in match.items()))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, v in self.by_name.get(name, []):
            if all(labels.get(k) == want for k, want in match.items()):
                out[labels.get(label, "")] += v
        return dict(out)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        body: bytes = response.read()
        return body


def _fetch_status(base: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(_get(base + "/status"))
    except urllib.error.HTTPError as exc:  # /status answers JSON even when degraded
        doc = json.loads(exc.read() or b"{}")
    return doc


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - the loop returns


def human_seconds(s: float) -> str:
    s = int(s)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    return " ".join([*parts, f"{minutes}m", f"{s}s"])


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    return table


def render(status: dict[str, Any], m: Samples, console: Console) -> None:
    ready = bool(status.get("ready"))
    uptime = human_seconds(status.get("uptime_seconds", 0))
    console.print(
        f"[bold]stablemirror {status.get('version', '?')}[/bold]  role "
        f"[cyan]{status.get('role', '?')}[/cyan]  up {uptime}"
        f"  workers {status.get('workers', '?')}  "
        + ("[green]ready[/green]" if ready else "[red]NOT READY[/red]"))
    for check, result in status.get("checks", {}).items():
        if result != "ok":
            console.print(f"  [red]{check}[/red]: {result}")

    pulls = _table("Pulls (since start)", "kind", "pulls", "failed", "failure ratio",
                   "failures by reason")
    for kind in ("manifest", "blob"):
        total = m.total("stablemirror_pulls_total", kind=kind)
        reasons = m.by("stablemirror_pull_failures_total", "reason", kind=kind)
        failed = sum(reasons.values())
        pulls.add_row(kind, f"{total:.0f}", f"{failed:.0f}", _pct(failed, total),
                      ", ".join(f"{r} {v:.0f}" for r, v in sorted(reasons.items()) if v))
    console.print(pulls)

    traffic = _table("Blob bytes served", "source", "bytes")
    for source, n in sorted(m.by("stablemirror_blob_bytes_served_total", "source").items()):
        traffic.add_row(source, human_bytes(n))
    cache = m.by("stablemirror_cache_requests_total", "result")
    lookups = sum(cache.values())
    # Served from the cache (fresh or stale) over all lookups, as on the dashboard.
    traffic.add_row("cache hit ratio", _pct(cache.get("hit", 0) + cache.get("stale", 0),
                                            lookups))
    console.print(traffic)

    upstreams = _table("Upstreams", "upstream", "state", "requests", "errors", "mean latency")
    for u in status.get("upstreams", []):
        reqs: dict[str, float] = u.get("requests", {})
        errors = sum(v for r, v in reqs.items() if r in ("error", "timeout"))
        state = {True: "[green]up[/green]", False: "[red]down[/red]"}.get(u.get("up"), "?")
        latency = u.get("mean_latency_seconds")
        upstreams.add_row(u["upstream"], state, f"{sum(reqs.values()):.0f}", f"{errors:.0f}",
                          f"{latency * 1000:.0f} ms" if latency is not None else "-")
    failovers = m.total("stablemirror_upstream_failovers_total")
    if status.get("upstreams") or failovers:
        upstreams.caption = f"failovers: {failovers:.0f}"
        console.print(upstreams)

    storage = _table("Storage", "tier", "blobs", "used", "capacity", "used %", "uploads open")
    for tier in status.get("storage", []):
        storage.add_row(tier["tier"], f"{tier['blobs']:,}", human_bytes(tier["blob_bytes"]),
                        human_bytes(tier["capacity_bytes"]),
                        _pct(tier["blob_bytes"], tier["capacity_bytes"]),
                        str(tier["uploads_in_progress"]))
    storage.caption = f"GC freed: {human_bytes(m.total('stablemirror_gc_freed_bytes_total'))}"
    console.print(storage)
    _p2p(m, console)

    http = _table("HTTP (since start)", "route", "requests", "5xx", "mean duration")
    counts = m.by("stablemirror_http_request_duration_seconds_count", "route")
    sums = m.by("stablemirror_http_request_duration_seconds_sum", "route")
    for route, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        errors = sum(v for labels, v in m.by_name.get("stablemirror_http_requests_total", [])
                     if labels.get("route") == route and labels.get("status", "").startswith("5"))
        http.add_row(route, f"{n:.0f}", f"{errors:.0f}",
                     f"{1000 * sums.get(route, 0) / n:.1f} ms" if n else "-")
    console.print(http)
    _notifications(m, console)


def _notifications(m: Samples, console: Console) -> None:
    """Per notification endpoint (docs/notifications.md); nothing without endpoints."""
    pending = m.by("stablemirror_notifications_pending", "endpoint")
    delivered = m.by("stablemirror_notifications_delivered_total", "endpoint")
    if not pending and not delivered:
        return
    oldest = m.by("stablemirror_notifications_oldest_pending_age_seconds", "endpoint")
    failed = m.by("stablemirror_notifications_failed_attempts_total", "endpoint")
    dropped = m.by("stablemirror_notifications_dropped_total", "endpoint")
    table = _table("Notifications", "endpoint", "pending", "oldest pending", "delivered",
                   "failed attempts", "dropped")
    for name in sorted(set(pending) | set(delivered)):
        age = oldest.get(name, 0.0)
        table.add_row(name, f"{pending.get(name, 0):.0f}", human_seconds(age) if age else "-",
                      f"{delivered.get(name, 0):.0f}", f"{failed.get(name, 0):.0f}",
                      f"{dropped.get(name, 0):.0f}")
    console.print(table)


def _p2p(m: Samples, console: Console) -> None:
    """A node's swarm (docs/p2p.md), when it has pulled anything by P2P."""
    if not m.total("stablemirror_p2p_pulls_total"):
        return
    received = m.by("stablemirror_p2p_received_bytes_total", "origin")
    # bytes received from: peers, parts the edge handed out, the edge by HTTP (fallbacks)
    table = _table("P2P (since start)", "pulls", "peers", "edge parts", "HTTP", "sent",
                   "rejected", "fallbacks", "swarm")
    table.add_row(f"{m.total('stablemirror_p2p_pulls_total'):.0f}",
                  human_bytes(received.get("peers", 0)),
                  human_bytes(received.get("edge_pieces", 0)),
                  human_bytes(received.get("edge_http", 0)),
                  human_bytes(m.total("stablemirror_p2p_uploaded_bytes_total")),
                  human_bytes(m.total("stablemirror_p2p_rejected_bytes_total")),
                  f"{m.total('stablemirror_p2p_fallbacks_total'):.0f}",
                  f"{m.total('stablemirror_p2p_swarm_peers'):.0f}")
    console.print(table)


def _p2p_blobs(base: str, console: Console) -> None:
    """Per blob, from the node's `GET /p2p/status` (the newest 10)."""
    try:
        doc = json.loads(_get(base + "/p2p/status"))
    except (OSError, ValueError):
        return
    blobs = doc.get("blobs", [])[-10:]
    if not blobs:
        return
    table = _table("P2P per blob", "blob", "state", "size", "peers", "edge", "sent",
                   "rejected", "swarm")
    for b in blobs:
        table.add_row(str(b.get("digest", ""))[:19], str(b.get("state", "")),
                      human_bytes(b.get("size") or 0), human_bytes(b.get("from_peers") or 0),
                      human_bytes(b.get("from_edge") or 0),
                      human_bytes(b.get("uploaded") or 0),
                      human_bytes(b.get("rejected") or 0), str(b.get("peers", 0)))
    console.print(table)


def status(
    url: Annotated[str | None, typer.Option(
        help="server base URL (default: http://<listen> from the settings)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file")] = None,
) -> None:
    """Summarize a running server: health, pulls, cache, upstreams, storage."""
    base = (url or f"http://{load_settings(config).listen}").rstrip("/")
    console = Console()
    try:
        doc = _fetch_status(base)
        metrics_text = _get(base + "/metrics")
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {base}: {exc}[/red]")
        raise typer.Exit(1) from exc
    samples = Samples(metrics_text.decode())
    render(doc, samples, console)
    if samples.total("stablemirror_p2p_pulls_total"):
        _p2p_blobs(base, console)
    if not doc.get("ready"):
        raise typer.Exit(2)
