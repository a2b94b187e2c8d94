"""Tiny GGUF files for tests: a header of typed key/values and tensor infos."""

from __future__ import annotations

import struct


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf(kvs: list[tuple[str, int, bytes]], tensors: list[tuple[str, list[int], int]],
         version: int = 3, data: bytes = b"\0" * 64) -> bytes:
    """kvs: (key, value type, encoded value); tensors: (name, dims, ggml type)."""
    out = b"GGUF" + struct.pack("<I", version)
    out += struct.pack("<QQ", len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += _s(key) + struct.pack("<I", vtype) + value
    for name, dims, ggml_type in tensors:
        out += _s(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, 0)
    return out + data


def string_value(text: str) -> bytes:
    return _s(text)


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def string_array(items: list[str]) -> bytes:
    return struct.pack("<IQ", 8, len(items)) + b"".join(_s(i) for i in items)
