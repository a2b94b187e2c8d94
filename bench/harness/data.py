"""Test data: random, incompressible blob files, hashed as they are written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common import BenchError, MiB, log


@dataclass
class Blob:
    path: Path
    size: int
    digest: str


def make_random_file(path: Path, size: int) -> Blob:
    """Random (incompressible) bytes, hashed as they are written.  Uses openssl's AES-CTR
    keystream with a random key when available (~1 GB/s), else os.urandom (~200 MB/s)."""
    h = hashlib.sha256()
    step = 8 * MiB
    openssl = shutil.which("openssl")
    with path.open("wb") as out:
        if openssl:
            argv = [
                openssl,
                "enc",
                "-aes-128-ctr",
                "-nosalt",
                "-K",
                os.urandom(16).hex(),
                "-iv",
                os.urandom(16).hex(),
            ]
            with subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            ) as enc:
                assert enc.stdin is not None and enc.stdout is not None
                feeder = threading.Thread(target=_feed_zeros, args=(enc.stdin, size), daemon=True)
                feeder.start()
                left = size
                while left:
                    chunk = enc.stdout.read(min(step, left))
                    if not chunk:
                        raise BenchError("openssl keystream ended early")
                    h.update(chunk)
                    out.write(chunk)
                    left -= len(chunk)
                enc.stdout.close()
                feeder.join(timeout=10)
                enc.wait(timeout=10)
        else:
            left = size
            while left:
                chunk = os.urandom(min(step, left))
                h.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return Blob(path, size, "sha256:" + h.hexdigest())


def _feed_zeros(pipe: Any, size: int) -> None:
    zeros = bytes(1 * MiB)
    left = size + 64  # a little extra; openssl may buffer a block
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        while left > 0:
            n = min(len(zeros), left)
            pipe.write(zeros[:n])
            left -= n
        pipe.close()


class BlobPool:
    """Random blob files handed out per owner: an owner (one server set) never gets the same
    blob twice; different owners (separate storage) reuse the files, so only a handful are
    ever generated."""

    MAX_FILES = 24

    def __init__(self, work: Path, size: int) -> None:
        self.work = work
        self.size = size
        self.files: list[Blob] = []
        self.used: dict[str, int] = {}

    def take(self, owner: str) -> Blob:
        i = self.used.get(owner, 0)
        self.used[owner] = i + 1
        if i >= self.MAX_FILES:
            raise BenchError(f"more than {self.MAX_FILES} fresh blobs needed for {owner}")
        while len(self.files) <= i:
            t0 = time.perf_counter()
            path = self.work / f"blob-{len(self.files)}.bin"
            self.files.append(make_random_file(path, self.size))
            log(f"generated {path.name} ({self.size // MiB} MiB) in "
                f"{time.perf_counter() - t0:.1f}s")
        return self.files[i]

    def remove(self) -> None:
        for b in self.files:
            b.path.unlink(missing_ok=True)
