"""The piece size of a blob's torrent (pure).

About `target` pieces per blob (Dragonfly's rule: ~500), a power of two as BitTorrent v2
requires, clamped to [low, high]: small pieces mean more hashes and requests, large ones
mean a peer waits longer before it has anything to share. 16 MiB -> 32 KiB, clamped to the
default minimum of 256 KiB (64 pieces); 256 MiB -> 512 KiB (512 pieces); 64 GiB -> 128 MiB,
clamped to the default maximum of 16 MiB (4096 pieces).
"""

from __future__ import annotations

import math


def piece_size(size: int, low: int, high: int, target: int = 500) -> int:
    ideal = max(size / max(target, 1), 1.0)
    power = 1 << max(round(math.log2(ideal)), 0)
    return min(max(power, low), high)
