"""Channels: names, admission rules, weighted splits and per-client cohorts (pure, no I/O).

A channel points at a weighted set of versions (one version at 100 after a promotion).
A client's version is found by hashing (repository, channel, identity) to a point in
[0, 100) and walking the entries newest version first by cumulative weight: the newest
version owns the bottom band [0, w_newest). Raising the newest version's weight therefore
only moves clients into it, and a client keeps its version while the weights stand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stablemirror.oci.errors import ReleaseInvalid
from stablemirror.oci.names import is_valid_tag
from stablemirror.releases.semver import Version, is_floating_tag, parse_version

ANY = "*"
RELEASE = "release"
# Default admission: alpha takes anything, beta takes -beta*, -rc* and releases,
# stable only releases. Channels not listed take anything.
DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    "alpha": (ANY,),
    "beta": ("beta", "rc", RELEASE),
    "stable": (RELEASE,),
}
DEFAULT_CHANNELS = tuple(DEFAULT_RULES)


@dataclass(frozen=True, slots=True)
class Entry:
    """One version of a channel with its share of clients, in percent."""

    version: str  # the tag spelling
    digest: str
    weight: int

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "digest": self.digest, "weight": self.weight}


def validate_channel_name(name: str) -> str:
    """A channel is read as a tag, so it must be one; and not a version or floating tag,
    which name content rather than a pointer."""
    if not is_valid_tag(name):
        raise ReleaseInvalid(field="channel", channel=name,
                             reason="not a valid tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
    if parse_version(name) is not None or is_floating_tag(name):
        raise ReleaseInvalid(field="channel", channel=name,
                             reason="a version or floating tag cannot be a channel")
    return name


def admits(rule: Sequence[str], version: Version) -> bool:
    """Does an admission rule (a list of ANY, RELEASE or pre-release prefixes) take it?"""
    if ANY in rule:
        return True
    if version.is_release:
        return RELEASE in rule
    first = version.prerelease[0].lower()
    return any(p != RELEASE and first.startswith(p.lower()) for p in rule)


def rule_for(channel: str, rules: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    return tuple(rules.get(channel, DEFAULT_RULES.get(channel, (ANY,))))


def describe_rule(rule: Sequence[str]) -> str:
    if ANY in rule:
        return "any version"
    parts = [f"-{p}*" for p in rule if p != RELEASE]
    if RELEASE in rule:
        parts.append("releases")
    return " or ".join(parts) if parts else "nothing"


def parse_weights(raw: Mapping[str, object]) -> dict[str, int]:
    """VERSION -> integer weight; weights are whole percent and must sum to 100."""
    if not raw:
        raise ReleaseInvalid(field="weights", reason="name at least one VERSION=WEIGHT")
    weights: dict[str, int] = {}
    for version, weight in raw.items():
        if parse_version(version) is None:
            raise ReleaseInvalid(field="weights", version=version,
                                 reason="not a SemVer version")
        if isinstance(weight, bool) or not isinstance(weight, int | str):
            raise ReleaseInvalid(field="weights", version=version,
                                 reason="the weight must be an integer")
        try:
            w = int(weight)
        except ValueError:
            raise ReleaseInvalid(field="weights", version=version,
                                 reason="the weight must be an integer") from None
        if not 0 <= w <= 100:
            raise ReleaseInvalid(field="weights", version=version, weight=w,
                                 reason="a weight is between 0 and 100")
        weights[version] = w
    total = sum(weights.values())
    if total != 100:
        raise ReleaseInvalid(field="weights", total=total, reason="weights must sum to 100")
    return weights


def newest_first(entries: Sequence[Entry]) -> list[Entry]:
    def key(e: Entry) -> tuple[object, ...]:
        v = parse_version(e.version)
        return v.sort_key() if v is not None else (-1,)
    return sorted(entries, key=key, reverse=True)


def cohort_point(repository: str, channel: str, identity: str) -> float:
    """A stable point in [0, 100) for this client on this channel."""
    h = hashlib.sha256(f"{repository}\0{channel}\0{identity}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 * 100


def choose(entries: Sequence[Entry], point: float) -> Entry:
    """The entry whose band holds `point`, bands laid out newest version first."""
    live = [e for e in newest_first(entries) if e.weight > 0]
    if not live:
        raise ValueError("a channel needs an entry with weight")
    upper = 0
    for e in live:
        upper += e.weight
        if point < upper:
            return e
    return live[-1]  # weights sum to 100 and point < 100; float safety only


def resolve(repository: str, channel: str, identity: str, entries: Sequence[Entry]) -> Entry:
    return choose(entries, cohort_point(repository, channel, identity))


def rollback_target(states: Sequence[tuple[str, tuple[Entry, ...]]]) -> tuple[Entry, ...] | None:
    """Replay a channel's history as a stack: a promotion, split or named rollback pushes
    its state; a plain rollback pops. The target of the next plain rollback is the state
    under the top, so repeated rollbacks walk further back instead of toggling."""
    stack: list[tuple[Entry, ...]] = []
    for action, to in states:
        if action == "rollback" and len(stack) > 1:
            stack.pop()
        else:
            stack.append(to)
    return stack[-2] if len(stack) > 1 else None


def merge_tags(tags: Sequence[str], channels: Sequence[str], n: int | None,
               last: str | None) -> list[str]:
    """A tag listing with channels in it, lexically ordered, paginated by `n`/`last`."""
    merged = sorted(set(tags) | set(channels))
    if last:
        merged = [t for t in merged if t > last]
    return merged if n is None else merged[:n]
