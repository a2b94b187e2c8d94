"""Repository names and tags by the distribution-spec grammar; nothing can climb out."""

from __future__ import annotations

import pytest

from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import DigestInvalid, ManifestInvalid, NameInvalid
from stablemirror.oci.names import (
    MAX_NAME_LENGTH,
    is_valid_tag,
    parse_reference,
    validate_name,
)


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "library/ubuntu",
        "a/b/c/d/e/f",
        "models/llama-3.1-8b",
        "x_y",
        "x__y",
        "x---y",
        "a.b.c",
        "0",
        "9lives/2day",
        "org/team.sub/project_name-x",
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "..",
        ".",
        "a/../b",
        "a/./b",
        "x/..",
        "/x",
        "x/",
        "a//b",
        "/",
        "Upper",
        "library/Ubuntu",
        "ALLCAPS",
        "-leading",
        "trailing-",
        ".hidden",
        "trailing.",
        "_x",
        "x_",
        "x___y",  # at most two underscores
        "x._y",
        "x-.y",
        "a b",
        "a\\b",
        "a\\..\\b",
        "a\nb",
        "a\n",
        "a\x00b",
        "a%2fb",
        "%2e%2e/x",
        "a:b",
        "a@b",
        "naïve",
        "a/b/",
        "ünicode/name",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid) as info:
        validate_name(name)
    assert info.value.code == "NAME_INVALID"
    assert info.value.status == 400
    assert info.value.detail["name"] == name


def test_name_length_limit() -> None:
    assert MAX_NAME_LENGTH == 255
    longest = "a" * 255
    assert validate_name(longest) == longest
    with_slashes = "/".join(["ab"] * 85)  # 254 characters
    assert len(with_slashes) == 254
    assert validate_name(with_slashes) == with_slashes
    for too_long in ("a" * 256, "/".join(["abc"] * 64) + "ab", "a" * 10_000):
        assert len(too_long) >= 256
        with pytest.raises(NameInvalid):
            validate_name(too_long)


@pytest.mark.parametrize(
    "tag", ["latest", "v1", "v1.0.0", "1", "_private", "A-Z_a.z", "x" * 128, "sha256-abc.sig"]
)
def test_valid_tags(tag: str) -> None:
    assert is_valid_tag(tag)


@pytest.mark.parametrize(
    "tag",
    ["", ".hidden", "-dash", "x" * 129, "a/b", "a:b", "a b", "tag\n", "..", "ü", "a@b", "a+b"],
)
def test_invalid_tags(tag: str) -> None:
    assert not is_valid_tag(tag)


def test_parse_reference_tag() -> None:
    assert parse_reference("latest") == "latest"
    assert parse_reference("x" * 128) == "x" * 128


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_parse_reference_digest(algorithm: str) -> None:
    d = Digest.of(b"m", algorithm)
    assert parse_reference(str(d)) == d


@pytest.mark.parametrize("reference", ["", "..", "../etc", "x" * 129, "-x", "a/b"])
def test_parse_reference_rejects_bad_tags(reference: str) -> None:
    with pytest.raises(ManifestInvalid):
        parse_reference(reference)


@pytest.mark.parametrize("reference", ["sha256:abc", "md5:" + "0" * 32, "a:b", "sha256:../x"])
def test_parse_reference_rejects_bad_digests(reference: str) -> None:
    with pytest.raises(DigestInvalid):
        parse_reference(reference)
