"""Repository-name patterns, written once (pure, no I/O).

Three kinds, each documented where users write them:
- IAM globs (`*` any run of characters, slashes included; `?` one character): access
  policies and audit queries (docs/auth.md, docs/audit.md);
- fnmatch globs (the same, plus `[seq]`): trust policies, pinned cache entries, immutable
  tags (docs/trust.md, docs/mirror.md, docs/releases.md);
- namespace prefixes, where the longest prefix a repository starts with wins: mirror
  namespaces, verify-on-read modes, release namespaces.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TypeVar

T = TypeVar("T")


@lru_cache(maxsize=4096)
def glob(pattern: str) -> re.Pattern[str]:
    """IAM wildcards: `*` any run of characters (slashes included), `?` one character."""
    out = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(out, re.DOTALL)


def glob_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return glob(pattern).fullmatch(value) is not None


def fnmatch_match(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def longest_prefix(value: str, items: Iterable[T], prefix: Callable[[T], str]) -> T | None:
    """The item whose prefix is the longest that `value` starts with (the first of equals)."""
    best: T | None = None
    best_length = -1
    for item in items:
        p = prefix(item)
        if value.startswith(p) and len(p) > best_length:
            best, best_length = item, len(p)
    return best
