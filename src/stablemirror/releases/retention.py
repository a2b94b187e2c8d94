"""Which versions retention removes (pure, no I/O).

Per repository: keep the `keep_per_line` newest versions of every major/minor line, and
keep anything a channel or floating tag points at, or that was pulled in the last
`keep_days` days. Everything else goes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from stablemirror.releases.semver import Version, ordered, parse_version


@dataclass(frozen=True, slots=True)
class VersionFacts:
    tag: str
    digest: str
    last_pulled: float | None  # None: never pulled
    protected: bool  # a channel or floating tag points at its digest


@dataclass(frozen=True, slots=True)
class Doomed:
    tag: str
    digest: str
    reason: str


def plan(facts: list[VersionFacts], keep_per_line: int, keep_days: float, now: float
         ) -> list[Doomed]:
    by_line: dict[tuple[int, int], list[tuple[Version, VersionFacts]]] = defaultdict(list)
    for f in facts:
        v = parse_version(f.tag)
        if v is not None:
            by_line[v.line].append((v, f))
    cutoff = now - timedelta(days=keep_days).total_seconds()
    doomed: list[Doomed] = []
    for line in sorted(by_line):
        entries = by_line[line]
        newest = ordered([v for v, _ in entries])[::-1][:keep_per_line]
        kept = {v.tag for v in newest}
        for v, f in sorted(entries, key=lambda e: e[0].sort_key()):
            if v.tag in kept or f.protected:
                continue
            if f.last_pulled is not None and f.last_pulled >= cutoff:
                continue
            doomed.append(Doomed(f.tag, f.digest,
                                 f"older than the {keep_per_line} newest of "
                                 f"{line[0]}.{line[1]}, no channel or floating tag, "
                                 f"not pulled for {keep_days:g} days"))
    return doomed
