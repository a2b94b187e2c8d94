"""SemVer parsing, the tag spelling of build metadata, precedence and floating tags."""

from __future__ import annotations

import random

import pytest

from stablemirror.releases.semver import (
    floating_targets,
    is_floating_tag,
    is_version_tag,
    ordered,
    parse_version,
)

# The precedence example of semver.org, section 11, lowest first.
SPEC_ORDER = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
              "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]


def test_spec_precedence_whatever_the_input_order() -> None:
    rng = random.Random(7)
    for _ in range(20):
        shuffled = SPEC_ORDER[:]
        rng.shuffle(shuffled)
        got = ordered([v for t in shuffled if (v := parse_version(t)) is not None])
        assert [str(v) for v in got] == SPEC_ORDER


def test_numbers_compare_as_numbers() -> None:
    tags = ["1.10.0", "1.9.0", "1.2.10", "1.2.9", "2.0.0", "10.0.0"]
    got = [str(v) for v in ordered([parse_version(t) for t in tags])]  # type: ignore[misc]
    assert got == ["1.2.9", "1.2.10", "1.9.0", "1.10.0", "2.0.0", "10.0.0"]


@pytest.mark.parametrize("tag", ["1.2.0", "0.0.0", "1.2.0-beta.1", "1.2.0-rc.1_build.5",
                                 "1.2.0_20240101", "1.0.0-x-y.7z.92", "1.0.0-0.3.7"])
def test_versions(tag: str) -> None:
    v = parse_version(tag)
    assert v is not None and v.tag == tag


@pytest.mark.parametrize("tag", ["v1.2.0", "1.2", "1", "01.2.0", "1.02.0", "1.2.0-",
                                 "1.2.0-01", "1.2.0_a_b", "1.2.0+b_c", "latest", "stable",
                                 "1.2.0-beta..1", "1.2.3.4", ""])
def test_not_versions(tag: str) -> None:
    assert parse_version(tag) is None
    assert not is_version_tag(tag)


def test_underscore_is_build_metadata() -> None:
    v = parse_version("1.2.0_build.5")
    assert v is not None
    assert str(v) == "1.2.0+build.5" and v.build == "build.5" and v.is_release
    assert parse_version("1.2.0+build.5") == v


def test_build_metadata_has_no_precedence_but_order_is_total() -> None:
    a, b = parse_version("1.2.0_a"), parse_version("1.2.0_b")
    assert a is not None and b is not None
    assert a.sort_key()[:5] == b.sort_key()[:5]
    assert ordered([b, a]) == [a, b]


def test_floating_tags() -> None:
    assert is_floating_tag("1") and is_floating_tag("1.2") and is_floating_tag("0.10")
    assert not is_floating_tag("1.2.3") and not is_floating_tag("01") and not is_floating_tag("x")
    versions = [v for t in ["1.0.0", "1.1.0", "1.1.3", "1.2.0-beta.1", "2.0.0-rc.1", "0.9.1"]
                if (v := parse_version(t)) is not None]
    got = {k: str(v) for k, v in floating_targets(versions).items()}
    # pre-releases never move a floating tag
    assert got == {"1.0": "1.0.0", "1.1": "1.1.3", "1": "1.1.3", "0.9": "0.9.1", "0": "0.9.1"}
