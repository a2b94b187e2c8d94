"""How fast this machine writes into its page cache, the copy every storing mirror makes.

On this VM a write into page-cache pages the guest has not used lately runs at a fraction
of memory speed (the first touch of such a page is slow outside the guest; `perf` shows the
time in the kernel's copy into the page, `copy_folio_from_iter_atomic`), while a write into
pages just freed by a deleted file runs at memory speed. A mirror whose client is sent the
stored bytes (stablemirror, nginx) waits for that write; docker-registry's proxy, whose
client stream is not stored (its copy is a second fetch in the background), does not. So
the bench measures both rates and reports them beside the cold pulls (docs/cold-pull.md).
What takes the pages away here is a DAMON pageout scheme; `steady_page_cache` pauses it
and fills the page cache for a run that should see the memory of a host that has run a while.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 4 << 20


def _write(path: Path, size: int) -> float:
    """Seconds to write `size` bytes of a new file (write(2) only, no fsync)."""
    block = b"\1" * CHUNK
    t0 = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(size // CHUNK):
            os.write(fd, block)
    finally:
        os.close(fd)
    return time.monotonic() - t0


def page_cache_write_rates(work: Path, size: int) -> dict[str, float]:
    """MB/s of a write into pages not used lately ("fresh") and of the same write again
    right after the first file was deleted ("reused"). Both files are gone afterwards and
    synced out first, so no measurement that follows meets their writeback."""
    fresh, again = work / "pagecache-fresh.probe", work / "pagecache-reused.probe"
    try:
        os.sync()
        t_fresh = _write(fresh, size)
        os.sync()
        fresh.unlink()
        t_reused = _write(again, size)
        os.sync()
    finally:
        for p in (fresh, again):
            p.unlink(missing_ok=True)
    return {"fresh_mbps": size / t_fresh / 1e6, "reused_mbps": size / t_reused / 1e6}


DAMON_STATES = Path("/sys/kernel/mm/damon/admin/kdamonds")
HEADROOM = 3 << 30  # left free of the fill: the servers, the clients, the blob pool's writes


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def _running_damons() -> list[Path]:
    """The state files of DAMON daemons that are on (they page out idle page cache)."""
    if not DAMON_STATES.is_dir():
        return []
    return [p for p in sorted(DAMON_STATES.glob("*/state"))
            if p.read_text().strip() == "on"]


@contextlib.contextmanager
def steady_page_cache(work: Path) -> Iterator[dict[str, float | int]]:
    """The memory of a host that has run for a while: page cache fills RAM, so a new file's
    pages come from reclaimed page cache, not from memory the guest has not touched lately.
    DAMON daemons that page out idle memory are paused (and switched on again afterwards),
    and a file of all memory but HEADROOM is written, synced and kept until the end.
    Yields what it did (the report's header shows it)."""
    paused: list[Path] = []
    fill = work / "pagecache-steady.fill"
    try:
        for state in _running_damons():
            state.write_text("off")
            paused.append(state)
        size = max(0, _available_bytes() - HEADROOM) // CHUNK * CHUNK
        t = _write(fill, size) if size else 0.0
        os.sync()
        yield {"damon_paused": len(paused), "fill_gib": size / (1 << 30), "fill_s": t}
    finally:
        fill.unlink(missing_ok=True)
        for state in paused:
            with contextlib.suppress(OSError):
                state.write_text("on")
