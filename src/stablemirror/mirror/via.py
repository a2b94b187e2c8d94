"""The Via header (RFC 9110 section 7.6.3): which proxies a request already passed.

    Via = #( received-protocol RWS received-by [ RWS comment ] )
    received-protocol = [ protocol-name "/" ] protocol-version
    received-by = pseudonym / uri-host [ ":" port ]

Several Via header lines are one comma-separated list, in order. Comments are
parenthesised, may nest, may hold commas and backslash-escaped characters; they are
skipped. Loop detection compares whole received-by names: `edge` has not passed `edge-2`.
"""

from __future__ import annotations


def _split_top_level(header: str, separators: str) -> list[str]:
    """Split at `separators` outside comments; comments (with their parentheses) stay."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    escaped = False
    for ch in header:
        if escaped:
            escaped = False
        elif depth and ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and ch in separators:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def received_by(via: str) -> list[str]:
    """The received-by names of every entry of a (joined) Via header, in order.
    Malformed entries (no received-by) are skipped rather than guessed at."""
    names = []
    for entry in _split_top_level(via, ","):
        words = [w for w in _split_top_level(entry, " \t") if not w.startswith("(")]
        if len(words) >= 2:
            names.append(words[1])
    return names


def has_passed(via: str, node_id: str) -> bool:
    """Did a request with this Via already pass the node named `node_id`?"""
    return node_id in received_by(via)
