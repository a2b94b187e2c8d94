from __future__ import annotations

import os
from pathlib import Path

import pytest

from stablemirror.models.paths import UnsafePath
from stablemirror.models.unpack_files import Mismatch, TargetDir
from stablemirror.oci.digest import Digest


def write(target: TargetDir, parts: tuple[str, ...], data: bytes,
          digest: Digest | None = None, size: int | None = None) -> None:
    with target.staged(parts, digest or Digest.of(data), size if size is not None
                       else len(data)) as out:
        out.write(data)


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".partial" in p.name)


def test_a_verified_file_is_renamed_into_place(tmp_path: Path) -> None:
    with TargetDir(tmp_path / "out") as target:
        write(target, ("a", "b", "c.bin"), b"hello")
    assert (tmp_path / "out/a/b/c.bin").read_bytes() == b"hello"
    assert leftovers(tmp_path / "out") == []


def test_a_digest_or_size_mismatch_leaves_nothing(tmp_path: Path) -> None:
    with TargetDir(tmp_path) as target:
        with pytest.raises(Mismatch, match="does not match"):
            write(target, ("x",), b"evil", digest=Digest.of(b"good"))
        with pytest.raises(Mismatch, match="bytes"):
            write(target, ("y",), b"four", size=5)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert leftovers(tmp_path) == []


def test_a_symlinked_directory_in_the_target_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "out"
    root.mkdir()
    (root / "sub").symlink_to(outside)
    with TargetDir(root) as target, pytest.raises(UnsafePath, match="not a directory"):
        write(target, ("sub", "f"), b"x")
    assert list(outside.iterdir()) == []


def test_a_symlink_at_the_file_name_is_refused_not_replaced(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    root = tmp_path / "out"
    root.mkdir()
    (root / "f").symlink_to(victim)
    with TargetDir(root) as target, pytest.raises(UnsafePath, match="symlink"):
        write(target, ("f",), b"x")
    assert victim.read_bytes() == b"keep" and os.path.islink(root / "f")
    assert leftovers(root) == []


def test_a_file_where_a_directory_is_needed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    with TargetDir(tmp_path) as target, pytest.raises(UnsafePath):
        write(target, ("a", "b"), b"x")


def test_an_existing_regular_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    with TargetDir(tmp_path) as target:
        write(target, ("f",), b"new")
    assert (tmp_path / "f").read_bytes() == b"new"


@pytest.mark.parametrize("parts", [("..", "x"), ("a", ".", "b"), ("a/b",), ("",)])
def test_unchecked_components_are_refused_on_disk_too(tmp_path: Path,
                                                      parts: tuple[str, ...]) -> None:
    root = tmp_path / "out"
    with TargetDir(root) as target, pytest.raises(UnsafePath):
        write(target, parts, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
