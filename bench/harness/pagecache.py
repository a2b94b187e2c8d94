"""How fast this machine writes into its page cache, the copy every storing mirror makes.

On this VM a write into page-cache pages the guest has not used lately runs at a fraction
of memory speed (the first touch of such a page is slow outside the guest; `perf` shows the
time in the kernel's copy into the page, `copy_folio_from_iter_atomic`), while a write into
pages just freed by a deleted file runs at memory speed. A mirror whose client is sent the
stored bytes (stablemirror, nginx) waits for that write; docker-registry's proxy, whose
client stream is not stored (its copy is a second fetch in the background), does not. So
the bench measures both rates and reports them beside the cold pulls (docs/cold-pull.md).
"""

from __future__ import annotations

import os
import time
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
