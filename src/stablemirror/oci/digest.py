"""Digests: `algorithm:encoded`, with sha256 and sha512 (OCI image-spec descriptor rules)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from stablemirror.oci.errors import DigestInvalid

_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_ENCODED = re.compile(r"^[a-f0-9]+$")


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Hasher: ...


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, encoded = text.partition(":")
        expected = _ALGORITHMS.get(algorithm)
        if not sep or expected is None:
            raise DigestInvalid(digest=text, reason="unsupported algorithm")
        if len(encoded) != expected or not _ENCODED.match(encoded):
            raise DigestInvalid(digest=text, reason="malformed encoded part")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        h = new_hasher(algorithm)
        h.update(data)
        return cls(algorithm, h.hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Hasher:
        return new_hasher(self.algorithm)


def new_hasher(algorithm: str) -> Hasher:
    if algorithm not in _ALGORITHMS:
        raise DigestInvalid(algorithm=algorithm, reason="unsupported algorithm")
    return hashlib.new(algorithm)


def is_digest(reference: str) -> bool:
    return ":" in reference
