"""Writing files under the unpack target so that nothing lands outside it.

Paths are checked twice: as text (models/paths.py: no `..`, no absolute path, ...) and on
disk, where every directory on the way is opened relative to its parent's fd with
O_NOFOLLOW|O_DIRECTORY, so a symlink already sitting in the target (or planted there while
we run) is refused instead of followed; missing directories are created (0755). A file is
written to a fresh `.NAME.<random>.partial` in its directory (O_CREAT|O_EXCL|O_NOFOLLOW),
hashed as it is written, and renamed onto its name only after its size and digest match
the descriptor; a symlink or a directory at that name is refused, never replaced. Nothing
here creates a symlink.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from stablemirror.models.paths import UnsafePath
from stablemirror.oci.digest import Digest, Hasher

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Mismatch(ValueError):
    """What was written is not what the descriptor names."""


def _check_components(parts: tuple[str, ...]) -> None:
    """models/paths.py checked the text already; a second look here costs nothing."""
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\0" in part:
            raise UnsafePath("/".join(parts), f"component {part!r}")


class StagedFile:
    """A `.partial` file being written: sequential writes, hashed on the way."""

    def __init__(self, fd: int, digest: Digest | None) -> None:
        self.file = os.fdopen(fd, "wb")
        self.hasher: Hasher | None = digest.hasher() if digest is not None else None
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.hasher is not None:
            self.hasher.update(data)
        self.size += len(data)
        return self.file.write(data)


class TargetDir:
    """The unpack target; `close()` (or `with`) releases its directory fd."""

    def __init__(self, root: Path, fd: int | None = None) -> None:
        if fd is None:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root = root
        self.fd = fd

    def duplicate(self) -> TargetDir:
        """The same target on a dup(2) of its fd, for a worker thread to own and close: the
        coroutine that owns this one may close it while the thread still runs."""
        return TargetDir(self.root, os.dup(self.fd))

    def __enter__(self) -> TargetDir:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def open_dir(self, parts: tuple[str, ...]) -> int:
        """An fd of directory `parts` under the root, made as needed; the caller closes it."""
        _check_components(parts)
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                with suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as e:
                    where = "/".join(parts[:i + 1])
                    raise UnsafePath(where, f"is not a directory ({e.strerror})") from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    @contextmanager
    def staged(self, parts: tuple[str, ...], digest: Digest | None,
               size: int | None) -> Iterator[StagedFile]:
        """Write `parts` through a staged file; renamed into place on a clean exit whose
        bytes match `digest` (and `size`), removed otherwise. No digest: a member of a tar
        whose own digest was verified before it was opened."""
        _check_components(parts)
        parent = self.open_dir(parts[:-1])
        name = parts[-1]
        temp = f".{name[:200]}.{secrets.token_hex(6)}.partial"
        try:
            staged = StagedFile(os.open(temp, _NEW_FILE, 0o644, dir_fd=parent), digest)
            committed = False
            try:
                with staged.file:
                    yield staged
                path = "/".join(parts)
                if size is not None and staged.size != size:
                    raise Mismatch(f"{path}: {staged.size} bytes, the manifest says {size}")
                if (digest is not None and staged.hasher is not None
                        and staged.hasher.hexdigest() != digest.hex):
                    raise Mismatch(f"{path}: content does not match {digest}")
                self._check_replaceable(parent, name, path)
                os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
                committed = True
            finally:
                if not committed:
                    with suppress(FileNotFoundError):
                        os.unlink(temp, dir_fd=parent)
        finally:
            os.close(parent)

    @staticmethod
    def _check_replaceable(parent: int, name: str, path: str) -> None:
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(path, "exists as a symlink in the target (not replaced)")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(path, "exists in the target and is not a regular file")
