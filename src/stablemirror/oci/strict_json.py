"""Strict JSON parsing (pure) for documents that are stored and served byte for byte.

A manifest's digest is over its exact bytes, so what we accept must be read the same way by
every client that later pulls it. Python's `json` is more lenient than the Go parsers most
clients use: it decodes UTF-16/32 and a UTF-8 byte order mark from bytes, accepts NaN and
Infinity, keeps the last of duplicate keys, produces lone surrogates from `\\ud800` escapes
(which the database cannot store), and recurses once per nesting level. Each of those is
refused here, and nesting depth is measured by a linear scan *before* `json.loads` runs.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

# One JSON string, escapes included. The terminator also accepts the end of input (with an
# optional lone backslash), so a match that has started never fails: the scan stays linear
# even on an unterminated string made of escaped quotes.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BRACKETS_ONLY = (bytes.maketrans(b"[{]}", b"(())"),
                  bytes(b for b in range(256) if b not in b"[]{}"))
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonRejected(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def nesting_exceeds(raw: bytes, max_depth: int) -> bool:
    """True when arrays/objects nest deeper than `max_depth` (brackets in strings excluded)."""
    brackets = _STRING.sub(b"", raw).translate(*_BRACKETS_ONLY)
    if brackets.count(b"(") <= max_depth:
        return False  # the common case: too few openers to nest that deep at all
    if b"(" * (max_depth + 1) in brackets:
        return True  # the usual attack, found at C speed
    depth = 0
    for b in brackets:
        depth += 1 if b == 0x28 else -1
        if depth > max_depth:
            return True
    return False


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRejected(f"duplicate key {key!r} in an object")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not a JSON number")


def load_json(raw: bytes, max_depth: int) -> Any:
    """Parse UTF-8 JSON text (RFC 8259) strictly; raise JsonRejected saying why not."""
    if raw.startswith(codecs.BOM_UTF8):
        raise JsonRejected("must be UTF-8 without a byte order mark")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonRejected("not valid UTF-8") from e
    if nesting_exceeds(raw, max_depth):
        raise JsonRejected(f"nested deeper than {max_depth} levels")
    try:
        doc = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except JsonRejected:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError; ints past Python's limit
        raise JsonRejected("not valid JSON") from e
    if _SURROGATE_ESCAPE.search(raw):
        try:
            # A lone surrogate (from a `\ud800` escape) is not text: it has no UTF-8
            # encoding, so neither the index nor a client could store it. A pair is fine.
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise JsonRejected("contains a lone surrogate escape (not Unicode text)") from e
    return doc
