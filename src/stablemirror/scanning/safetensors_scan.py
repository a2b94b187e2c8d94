"""safetensors: a u64 header length, a JSON header, then the tensor bytes.

Checked: the length bound (100 MB, as the reference loader, and inside the file), strict
JSON (UTF-8, an object, no duplicate keys), every entry a known dtype with a shape of
non-negative ints and `data_offsets` [begin, end] inside the data area, its size
`prod(shape) * itemsize`, and the entries tiling the data area exactly: no overlap, no gap,
nothing after the last one. Only the header is read; the tensor bytes are not touched.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import IO, Any

from stablemirror.scanning.findings import Findings

MAX_HEADER = 100_000_000
# dtype -> size in bits (sub-byte float formats pack several values per byte)
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
              "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6,
              "F6_E3M2": 6}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _file_size(stream: IO[bytes]) -> int:
    here = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    stream.seek(here)
    return end - here


def looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1


def scan_safetensors(stream: IO[bytes], out: Findings) -> None:
    size = _file_size(stream)
    raw = stream.read(8)
    if len(raw) < 8:
        out.add("malformed", "safetensors_header", "shorter than the 8-byte header length")
        return
    n = struct.unpack("<Q", raw)[0]
    if n > MAX_HEADER or n > size - 8:
        out.add("malformed", "safetensors_header",
                f"header length {n} exceeds the bound ({min(MAX_HEADER, size - 8)})", 0)
        return
    text = stream.read(n)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        out.add("malformed", "safetensors_header", f"header is not valid JSON: {e}", 8)
        return
    if not isinstance(header, dict):
        out.add("malformed", "safetensors_header", "header is not a JSON object", 8)
        return
    data_size = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(
                    isinstance(v, str) for v in entry.values()):
                out.add("malformed", "safetensors_metadata",
                        "__metadata__ must map strings to strings", 8)
            continue
        span = _entry(key, entry, data_size, out)
        if span is not None:
            spans.append((span[0], span[1], key))
    spans.sort()
    at = 0
    for begin, end, key in spans:
        if begin < at:
            out.add("malformed", "safetensors_overlap",
                    f"tensor {key!r} overlaps the previous one (begins at {begin} < {at})")
        elif begin > at:
            out.add("malformed", "safetensors_gap",
                    f"{begin - at} unaccounted bytes before tensor {key!r}")
        at = max(at, end)
    if at != data_size and not out.items:
        out.add("malformed", "safetensors_trailing",
                f"data area is {data_size} bytes but the tensors cover {at}")


def _entry(key: str, entry: Any, data_size: int, out: Findings) -> tuple[int, int] | None:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        out.add("malformed", "safetensors_entry",
                f"tensor {key!r} must have exactly dtype, shape, data_offsets")
        return None
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BITS:
        out.add("malformed", "safetensors_dtype", f"tensor {key!r}: unknown dtype {dtype!r}")
        return None
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        out.add("malformed", "safetensors_shape", f"tensor {key!r}: bad shape {shape!r}")
        return None
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(
            isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        out.add("malformed", "safetensors_offsets",
                f"tensor {key!r}: data_offsets must be [begin, end]")
        return None
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        out.add("malformed", "safetensors_offsets",
                f"tensor {key!r}: data_offsets [{begin}, {end}] outside the "
                f"{data_size}-byte data area")
        return None
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        out.add("malformed", "safetensors_size",
                f"tensor {key!r}: shape {shape} of {dtype} needs {bits / 8:g} bytes, "
                f"offsets give {end - begin}")
        return None
    return begin, end
