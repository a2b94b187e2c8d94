"""ONNX: tensors whose data lives in external files, named by a `location` path.

A location must stay inside the model's directory: relative, no `..` component, no drive
or backslash tricks. The protobuf is walked field by field from the stream (large fields
skipped by seeking), descending only into the messages that can hold tensors: the graph,
its initializers and nodes, node attributes (tensors and sub-graphs), functions, training
info. A file that does not parse as ModelProto is a finding.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterator
from typing import IO

from stablemirror.scanning.findings import Findings

MAX_DEPTH = 64
# message -> {field number: message type of that field} (only what leads to tensors)
MESSAGES: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 20: "Training", 25: "Function"},
    "Training": {1: "Graph", 2: "Graph"},
    "Graph": {1: "Node", 5: "Tensor", 15: "Sparse"},
    "Function": {7: "Node"},
    "Node": {5: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 22: "Sparse",
                  23: "Sparse"},
    "Sparse": {1: "Tensor", 2: "Tensor"},
    "Tensor": {13: "Entry"},
    "Entry": {},
}


class _Bad(Exception):
    pass


def _varint(s: IO[bytes]) -> int | None:
    shift = result = 0
    while True:
        b = s.read(1)
        if not b:
            if shift == 0:
                return None
            raise _Bad("truncated varint")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _Bad("varint too long")


def _fields(s: IO[bytes], end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or length, start of a length-delimited value)."""
    while s.tell() < end:
        key = _varint(s)
        if key is None:
            raise _Bad("truncated message")
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = _varint(s)
            if value is None:
                raise _Bad("truncated varint")
            yield number, wire, value, 0
        elif wire == 1:
            s.seek(8, io.SEEK_CUR)
        elif wire == 5:
            s.seek(4, io.SEEK_CUR)
        elif wire == 2:
            length = _varint(s)
            if length is None or s.tell() + length > end:
                raise _Bad("field runs past its message")
            start = s.tell()
            yield number, wire, length, start
            s.seek(start + length)
        else:
            raise _Bad(f"wire type {wire}")
    if s.tell() != end:
        raise _Bad("message runs past its end")


def _bad_location(location: str) -> bool:
    if not location or location.startswith(("/", "\\")) or "\\" in location:
        return True
    if len(location) > 1 and location[1] == ":":
        return True
    normal = posixpath.normpath(location)
    return normal.startswith("..") or ".." in location.split("/") or "\x00" in location


def _walk(s: IO[bytes], kind: str, end: int, depth: int, out: Findings) -> None:
    if depth > MAX_DEPTH:
        raise _Bad("messages nested too deep")
    entry: dict[int, bytes] = {}
    for number, wire, length, start in _fields(s, end):
        if wire != 2:
            continue
        if kind == "Entry" and number in (1, 2):
            entry[number] = s.read(min(length, 4096))
            continue
        child = MESSAGES[kind].get(number)
        if child is not None:
            _walk(s, child, start + length, depth + 1, out)
    if kind == "Entry" and entry.get(1) == b"location":
        location = entry.get(2, b"").decode("utf-8", "replace")
        if _bad_location(location):
            out.add("unsafe_code", "external_data_path",
                    f"external tensor data at {location!r} leaves the model directory",
                    end)


def scan_onnx(stream: IO[bytes], out: Findings) -> None:
    start = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    stream.seek(start)
    try:
        _walk(stream, "Model", end, 0, out)
    except _Bad as e:
        out.add("malformed", "onnx", f"not a valid ONNX ModelProto: {e}", stream.tell())
