from __future__ import annotations

from stablemirror.client.preheat import select_nodes


def test_preheat_picks_a_stable_share_of_the_nodes() -> None:
    nodes = [f"10.0.0.{i}:5000" for i in range(10)]
    assert select_nodes(nodes, "e/a:1", None) == nodes
    three = select_nodes(nodes, "e/a:1", 25)
    assert len(three) == 3 and three == select_nodes(list(reversed(nodes)), "e/a:1", 25)
    assert select_nodes(nodes, "e/b:1", 25) != three  # another image, other nodes
    assert select_nodes(nodes, "e/a:1", 0) == []
