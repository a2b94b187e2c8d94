"""Via header parsing (RFC 9110 7.6.3) for loop detection: whole received-by names."""

from __future__ import annotations

import pytest

from stablemirror.mirror.via import has_passed, received_by


@pytest.mark.parametrize(("via", "names"), [
    ("", []),
    ("1.1 edge-2 (stablemirror)", ["edge-2"]),
    ("1.1 node-1 (stablemirror), 1.1 edge-1 (stablemirror)", ["node-1", "edge-1"]),
    ("HTTP/1.1 proxy.example.com:8080", ["proxy.example.com:8080"]),
    ("1.0 fred, 1.1 p.example.net", ["fred", "p.example.net"]),
    # comments may hold commas, spaces, nested parentheses and escapes
    ("1.1 a (Apache/2.4, mod_proxy (x, y) \\) z), 1.1 b", ["a", "b"]),
    # several Via lines arrive joined with ", "; empty list elements are allowed
    ("1.1 a,, 1.1 b ,", ["a", "b"]),
    ("1.1\tc\t(tab separated)", ["c"]),
    ("garbage", []),  # no received-by: skipped, not guessed
])
def test_received_by(via: str, names: list[str]) -> None:
    assert received_by(via) == names


def test_a_node_is_not_a_prefix_of_another() -> None:
    via = "1.1 edge-2 (stablemirror), 1.1 center-edge (stablemirror)"
    assert not has_passed(via, "edge")
    assert has_passed(via, "edge-2")
    assert has_passed(via, "center-edge")
    assert not has_passed("1.1 x (passed edge once)", "edge"), "comments are not names"
