"""A dependency-free PNG of completion over time (bench/p2p.py): nodes done (y) against
seconds (x), one step curve per run. Colours: P2P blue, plain HTTP orange; grid every 10%
of the time axis and every node."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

W, H, PAD = 720, 400, 40
COLOURS = [(31, 119, 180), (255, 127, 14)]


def _png(pixels: list[bytearray]) -> bytes:
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack("!I", len(data)) + kind + data
                + struct.pack("!I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack("!IIBBBBB", W, H, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def plot(curves: list[list[float]], path: Path) -> None:
    """`curves`: per run, the sorted completion times of its nodes."""
    pixels = [bytearray(b"\xff" * (W * 3)) for _ in range(H)]
    t_max = max(max(c) for c in curves if c) * 1.05
    n_max = max(len(c) for c in curves)

    def put(x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < W and 0 <= y < H:
            pixels[y][3 * x:3 * x + 3] = bytes(rgb)

    def xy(t: float, n: float) -> tuple[int, int]:
        return (PAD + int((W - 2 * PAD) * t / t_max),
                H - PAD - int((H - 2 * PAD) * n / n_max))

    for i in range(11):  # grid
        x, _ = xy(t_max * i / 10, 0)
        for y in range(PAD, H - PAD):
            put(x, y, (225, 225, 225))
    for n in range(n_max + 1):
        _, y = xy(0, n)
        for x in range(PAD, W - PAD):
            put(x, y, (225, 225, 225))
    for x in range(PAD, W - PAD):  # axes
        put(x, H - PAD, (0, 0, 0))
    for y in range(PAD, H - PAD):
        put(PAD, y, (0, 0, 0))
    for colour, times in zip(COLOURS, curves, strict=False):
        done, last = 0, (PAD, H - PAD)
        for t in [*times, t_max]:
            x, y = xy(t, done)
            for px in range(last[0], x + 1):  # horizontal, then up a step
                for w in (-1, 0, 1):
                    put(px, y + w, colour)
            done = min(done + 1, len(times))
            _, y2 = xy(t, done)
            for py in range(min(y, y2), max(y, y2) + 1):
                for w in (-1, 0, 1):
                    put(x + w, py, colour)
            last = (x, y2)
    path.write_bytes(_png(pixels))
