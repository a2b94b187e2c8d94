"""Retention: N newest per major/minor line, protected and recently pulled versions stay."""

from __future__ import annotations

from stablemirror.releases.retention import VersionFacts, plan

DAY = 86400.0
NOW = 1_000_000_000.0


def facts(*tags: str, protected: tuple[str, ...] = (), pulled: dict[str, float] | None = None
          ) -> list[VersionFacts]:
    pulled = pulled or {}
    return [VersionFacts(t, f"sha256:{t}", pulled.get(t), t in protected) for t in tags]


def test_keeps_the_newest_per_line() -> None:
    got = plan(facts("1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.1.1-beta.1", "2.0.0"), 2, 30, NOW)
    assert [d.tag for d in got] == ["1.0.0"]


def test_channels_floating_tags_and_recent_pulls_protect() -> None:
    tags = ("1.0.0", "1.0.1", "1.0.2", "1.0.3")
    got = plan(facts(*tags, protected=("1.0.0",), pulled={"1.0.1": NOW - 29 * DAY,
                                                          "1.0.2": NOW - 31 * DAY}),
               1, 30, NOW)
    assert [d.tag for d in got] == ["1.0.2"]
    assert "1.0" in got[0].reason


def test_non_versions_are_never_touched() -> None:
    assert plan(facts("latest", "stable", "1.2"), 0, 0, NOW) == []
