from __future__ import annotations

import pytest

from stablemirror.models.paths import UnsafePath, check_distinct, safe_parts

HOSTILE = ["", "/etc/passwd", "../x", "a/../../x", "a/..", "..", ".", "a//b", "a/./b",
           "a\\..\\b", "C:\\x", "a/\x00b", "a/\nb", "x" * 256, "a/" * 2100 + "b", "a/"]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafePath):
        safe_parts(path)


@pytest.mark.parametrize(("path", "parts"), [
    ("model.safetensors", ("model.safetensors",)), ("1_Pooling/config.json",
                                                    ("1_Pooling", "config.json")),
    ("./data/x.csv", ("data", "x.csv")), ("..a/b..", ("..a", "b..")),
    ("dir with space/ü.txt", ("dir with space", "ü.txt"))])
def test_ordinary_paths_pass(path: str, parts: tuple[str, ...]) -> None:
    assert safe_parts(path) == parts


@pytest.mark.parametrize("paths", [["a", "a"], ["a", "./a"], ["a", "a/b"], ["a/b", "a"],
                                   ["x/y/z", "x/y"]])
def test_a_path_named_twice_or_through_a_file_is_refused(paths: list[str]) -> None:
    with pytest.raises(UnsafePath):
        check_distinct(paths)


def test_distinct_paths_pass() -> None:
    check_distinct(["a/b", "a/c", "b", "ab/c"])
