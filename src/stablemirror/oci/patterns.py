"""Repository-name patterns, written once (pure, no I/O).

Two kinds: globs (`*` any run of characters, slashes included; `?` one character), as IAM
policies, trust policies, pinned cache entries and audit queries spell them; and namespace
prefixes, where the longest prefix a repository starts with wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=4096)
def glob(pattern: str) -> re.Pattern[str]:
    """IAM wildcards: `*` any run of characters (slashes included), `?` one character."""
    out = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(out, re.DOTALL)


def glob_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return glob(pattern).fullmatch(value) is not None


def longest_prefix(value: str, prefixes: Iterable[str]) -> str | None:
    """The longest of `prefixes` that `value` starts with, None when none does."""
    best: str | None = None
    for prefix in prefixes:
        if value.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best
