"""Channel names, admission rules, weights, cohorts (sticky, shares, monotone), rollback."""

from __future__ import annotations

import pytest

from stablemirror.oci.errors import ReleaseInvalid
from stablemirror.releases.rules import (
    DEFAULT_RULES,
    Entry,
    admits,
    choose,
    cohort_point,
    merge_tags,
    parse_weights,
    resolve,
    rollback_target,
    rule_for,
    validate_channel_name,
)
from stablemirror.releases.semver import parse_version

IDS = [f"client-{i}" for i in range(2000)]


def v(tag: str):  # type: ignore[no-untyped-def]
    parsed = parse_version(tag)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(("channel", "tag", "ok"), [
    ("alpha", "1.2.0-alpha.1", True), ("alpha", "1.2.0-beta.1", True), ("alpha", "1.2.0", True),
    ("beta", "1.2.0-alpha.1", False), ("beta", "1.2.0-beta", True),
    ("beta", "1.2.0-beta.1", True), ("beta", "1.2.0-RC.2", True), ("beta", "1.2.0", True),
    ("beta", "1.2.0-dev.1", False),
    ("stable", "1.2.0-rc.1", False), ("stable", "1.2.0-beta.1", False),
    ("stable", "1.2.0", True), ("stable", "1.2.0_build.7", True),
    ("canary", "1.2.0-anything", True),
])
def test_default_admission(channel: str, tag: str, ok: bool) -> None:
    assert admits(rule_for(channel, DEFAULT_RULES), v(tag)) is ok


def test_configured_rules_override_defaults() -> None:
    rules = {"stable": ("release", "rc"), "canary": ("release",)}
    assert admits(rule_for("stable", rules), v("1.0.0-rc.1"))
    assert not admits(rule_for("canary", rules), v("1.0.0-rc.1"))


@pytest.mark.parametrize("name", ["stable", "beta", "prod_eu", "A.b-c", "x" * 128])
def test_valid_channel_names(name: str) -> None:
    assert validate_channel_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a:b", "x" * 129, "1.2.0", "1.2",
                                  "1", "1.2.0-beta.1"])
def test_invalid_channel_names(name: str) -> None:
    with pytest.raises(ReleaseInvalid) as info:
        validate_channel_name(name)
    assert info.value.detail["field"] == "channel"


def test_weights() -> None:
    assert parse_weights({"1.1.0": 90, "1.2.0": "10"}) == {"1.1.0": 90, "1.2.0": 10}
    for bad in ({}, {"1.1.0": 90}, {"1.1.0": 90, "1.2.0": 20}, {"1.1.0": 101, "1.2.0": -1},
                {"latest": 100}, {"1.1.0": "x"}, {"1.1.0": 50.5, "1.2.0": 49.5},
                {"1.1.0": True}):
        with pytest.raises(ReleaseInvalid) as info:
            parse_weights(bad)  # type: ignore[arg-type]
        assert info.value.detail["field"] == "weights"


def entries(**weights: int) -> list[Entry]:
    return [Entry(k.replace("_", "."), f"sha256:{k}", w) for k, w in weights.items()]


def split(new: int) -> list[Entry]:
    return [Entry("1.1.0", "sha256:old", 100 - new), Entry("1.2.0", "sha256:new", new)]


def test_points_are_stable_and_spread() -> None:
    points = [cohort_point("team/model", "stable", i) for i in IDS]
    assert points == [cohort_point("team/model", "stable", i) for i in IDS]
    assert all(0 <= p < 100 for p in points)
    for decile in range(10):
        n = sum(1 for p in points if decile * 10 <= p < decile * 10 + 10)
        assert 150 <= n <= 250, (decile, n)
    # another channel or repository shuffles clients independently
    assert points != [cohort_point("team/model", "beta", i) for i in IDS]
    assert points != [cohort_point("team/other", "stable", i) for i in IDS]


def test_shares_follow_weights() -> None:
    for new in (0, 1, 10, 50, 90, 100):
        got = sum(1 for i in IDS if resolve("r", "stable", i, split(new)).version == "1.2.0")
        assert abs(got / len(IDS) * 100 - new) <= 3, (new, got)


def test_cohorts_are_monotone_when_the_new_weight_rises() -> None:
    previous: set[str] = set()
    for new in range(0, 101, 5):
        on_new = {i for i in IDS if resolve("r", "stable", i, split(new)).version == "1.2.0"}
        assert previous <= on_new, f"clients left 1.2.0 when its weight rose to {new}"
        previous = on_new
    assert previous == set(IDS)


def test_newest_version_owns_the_bottom_band_whatever_the_entry_order() -> None:
    three = entries(**{"1_0_0": 20, "1_1_0": 30, "1_2_0": 50})
    assert choose(three, 0.0).version == "1.2.0"
    assert choose(three, 49.99).version == "1.2.0"
    assert choose(three, 50.0).version == "1.1.0"
    assert choose(three, 79.99).version == "1.1.0"
    assert choose(three, 80.0).version == "1.0.0"
    assert choose(list(reversed(three)), 10.0).version == "1.2.0"
    # a zero weight owns no band
    assert choose(entries(**{"1_0_0": 100, "1_2_0": 0}), 0.0).version == "1.0.0"


def test_rollback_walks_back_through_the_history() -> None:
    a, b, c = (tuple(entries(**{t: 100})) for t in ("1_0_0", "1_1_0", "1_2_0"))
    assert rollback_target([("promote", a)]) is None
    assert rollback_target([("promote", a), ("promote", b)]) == a
    history = [("promote", a), ("promote", b), ("split", c)]
    assert rollback_target(history) == b
    # after a rollback to b, the next one goes to a, not back to c
    assert rollback_target([*history, ("rollback", b)]) == a
    # a named rollback is a move like a promotion: rolling back undoes it
    assert rollback_target([*history, ("rollback_to", a)]) == c


def test_tag_listing_with_channels() -> None:
    tags, channels = ["1.0.0", "1.1.0", "latest"], ["stable", "beta", "latest"]
    assert merge_tags(tags, channels, None, None) == ["1.0.0", "1.1.0", "beta", "latest",
                                                      "stable"]
    assert merge_tags(tags, channels, 2, "1.1.0") == ["beta", "latest"]
    assert merge_tags(tags, [], 1, None) == ["1.0.0"]
