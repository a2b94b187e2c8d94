"""Arrows point down: a room imports only rooms on lower floors (docs/architecture.md).

A room is a top-level package or module of `stablemirror`. Rooms on one floor do not import
each other either, so each floor can be read without the others beside it. Imports inside
functions count too: a deferred import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stablemirror

# Lowest floor first. A new room gets a floor here before it can import anything.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("oci", "metrics", "logs", "settings_names", "files"),
    ("index", "store", "client"),
    ("audit", "jobs", "events"),
    ("registry", "notifications"),
    ("auth", "trust", "releases", "integrity", "delta"),
    ("scanning", "models"),
    ("p2p",),
    ("mirror", "replication"),
    ("config",),
    ("api",),
    ("compose",),
    ("server",),
    ("cli",),
    ("__main__",),
)
FLOOR = {room: n for n, rooms in enumerate(FLOORS) for room in rooms}
PACKAGE = Path(stablemirror.__file__).parent


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "stablemirror" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def test_every_room_has_a_floor() -> None:
    rooms = {_room(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert sorted(rooms - FLOOR.keys()) == []


def test_no_arrow_runs_up_or_sideways() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _room(path)
        if me == "__init__":
            continue
        for other in sorted(_imported_rooms(path) - {me}):
            if FLOOR.get(other, len(FLOORS)) >= FLOOR[me]:
                wrong.append(f"{path.relative_to(PACKAGE)} -> {other}")
    assert wrong == []


def test_the_check_sees_an_arrow_up(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from stablemirror.api.keys import X\n")
    assert _imported_rooms(source) == {"api"}
