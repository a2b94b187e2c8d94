"""Digests: sha256 and sha512, parsing, hashing, rejection of everything else."""

from __future__ import annotations

import hashlib

import pytest

from stablemirror.oci.digest import Digest, is_digest, new_hasher
from stablemirror.oci.errors import DigestInvalid

SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA512_EMPTY = (
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)


@pytest.mark.parametrize(
    ("algorithm", "empty_hex"), [("sha256", SHA256_EMPTY), ("sha512", SHA512_EMPTY)]
)
def test_of_known_empty_values(algorithm: str, empty_hex: str) -> None:
    d = Digest.of(b"", algorithm)
    assert d.algorithm == algorithm
    assert d.hex == empty_hex
    assert str(d) == f"{algorithm}:{empty_hex}"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("data", [b"hello", b"\x00" * 1000, bytes(range(256)) * 17])
def test_of_matches_hashlib(algorithm: str, data: bytes) -> None:
    d = Digest.of(data, algorithm)
    assert d.hex == hashlib.new(algorithm, data).hexdigest()


def test_of_defaults_to_sha256() -> None:
    assert Digest.of(b"x").algorithm == "sha256"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_parse_round_trip(algorithm: str) -> None:
    d = Digest.of(b"round trip", algorithm)
    parsed = Digest.parse(str(d))
    assert parsed == d
    assert hash(parsed) == hash(d)
    assert str(parsed) == str(d)


def test_digests_of_different_algorithms_differ() -> None:
    assert Digest.of(b"a", "sha256") != Digest.of(b"a", "sha512")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        ":" + SHA256_EMPTY,
        SHA256_EMPTY,  # no algorithm
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "sha384:" + "a" * 96,
        "SHA256:" + SHA256_EMPTY,  # algorithm is case sensitive
        "sha256:" + SHA256_EMPTY.upper(),  # encoded part must be lower-case hex
        "sha256:" + SHA256_EMPTY[:-1],  # too short
        "sha256:" + SHA256_EMPTY + "0",  # too long
        "sha256:" + SHA256_EMPTY + "\n",  # trailing newline must not sneak past `$`
        "sha256:" + "g" * 64,  # not hex
        "sha256:" + "../" * 21 + "a",  # path characters
        "sha256:" + SHA512_EMPTY,  # sha512 length under sha256
        "sha512:" + SHA256_EMPTY,  # sha256 length under sha512
        "sha256: " + SHA256_EMPTY[1:],
        "sha256:" + SHA256_EMPTY + ":x",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DigestInvalid) as info:
        Digest.parse(text)
    assert info.value.code == "DIGEST_INVALID"
    assert info.value.status == 400


def test_parse_error_carries_the_offending_text() -> None:
    with pytest.raises(DigestInvalid) as info:
        Digest.parse("md5:abc")
    assert info.value.detail["digest"] == "md5:abc"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_incremental_hasher_matches_one_shot(algorithm: str) -> None:
    data = bytes(range(256)) * 1000
    h = new_hasher(algorithm)
    for i in range(0, len(data), 4093):
        h.update(data[i : i + 4093])
    snapshot = h.copy()
    assert h.hexdigest() == Digest.of(data, algorithm).hex
    snapshot.update(b"more")
    assert snapshot.hexdigest() == Digest.of(data + b"more", algorithm).hex
    assert h.hexdigest() == Digest.of(data, algorithm).hex  # copy is independent


def test_digest_hasher_uses_its_algorithm() -> None:
    d = Digest.of(b"abc", "sha512")
    h = d.hasher()
    h.update(b"abc")
    assert h.hexdigest() == d.hex


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "SHA256", "", "blake3"])
def test_new_hasher_rejects_unsupported(algorithm: str) -> None:
    with pytest.raises(DigestInvalid):
        new_hasher(algorithm)


def test_of_rejects_unsupported_algorithm() -> None:
    with pytest.raises(DigestInvalid):
        Digest.of(b"x", "md5")


def test_digest_is_immutable() -> None:
    d = Digest.of(b"x")
    with pytest.raises(AttributeError):
        d.hex = "0" * 64  # type: ignore[misc]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [("latest", False), ("v1.0", False), ("sha256:" + SHA256_EMPTY, True), ("a:b", True)],
)
def test_is_digest(reference: str, expected: bool) -> None:
    assert is_digest(reference) is expected
