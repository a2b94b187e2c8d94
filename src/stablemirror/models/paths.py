"""Layer paths (pure): what a manifest may name as a file to write under the target dir.

A path comes from an annotation or a tar member name, i.e. from whoever pushed the
artifact. Accepted: a relative POSIX path of normal components. Refused: empty paths,
absolute paths, `.` and `..` components, empty components (`a//b`), backslashes (a
Windows separator), NUL and other control characters, and components over 255 bytes.
That every accepted path stays inside the target is then also enforced on disk
(models/unpack_files.py walks directory fds with O_NOFOLLOW), so a symlink already present
in the target cannot redirect a write either.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_COMPONENT = 255
MAX_PATH = 4096


class UnsafePath(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path!r}: {reason}")
        self.path = path
        self.reason = reason


def safe_parts(path: str) -> tuple[str, ...]:
    """The components of a safe relative path, or UnsafePath saying why it is not."""
    if not path:
        raise UnsafePath(path, "empty path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise UnsafePath(path, f"longer than {MAX_PATH} bytes")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise UnsafePath(path, "control character in path")
    if "\\" in path:
        raise UnsafePath(path, "backslash in path")
    if path.startswith("/"):
        raise UnsafePath(path, "absolute path")
    trimmed = path[2:] if path.startswith("./") else path  # tar members often start so
    parts = tuple(trimmed.split("/"))
    for part in parts:
        if part in ("", "."):
            raise UnsafePath(path, "empty or '.' component")
        if part == "..":
            raise UnsafePath(path, "'..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT:
            raise UnsafePath(path, f"component longer than {MAX_COMPONENT} bytes")
    return parts


def check_distinct(paths: Iterable[str]) -> None:
    """No path twice and no file where another path needs a directory (`a` and `a/b`)."""
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for path in paths:
        parts = safe_parts(path)
        if parts in files:
            raise UnsafePath(path, "named twice")
        if parts in dirs:
            raise UnsafePath(path, "is also a directory of another path")
        parents = {parts[:i] for i in range(1, len(parts))}
        if parents & files:
            raise UnsafePath(path, "goes through another path's file")
        files.add(parts)
        dirs |= parents
