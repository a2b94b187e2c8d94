"""Which scanning policy a repository gets, and which findings block under it."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from stablemirror.scanning.allowlist import Allowlist
from stablemirror.scanning.config import SEVERITIES, ScanPolicySettings
from stablemirror.scanning.findings import Finding
from stablemirror.trust.policy import specificity


@dataclass(frozen=True)
class ScanPolicy:
    pattern: str
    mode: str  # enforce | warn | off
    block_on: tuple[str, ...]
    pending: str  # allow | block
    allow: Allowlist

    def matches(self, repository: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.pattern)

    def relevant(self, findings: Sequence[Finding]) -> list[Finding]:
        """Findings this namespace counts: its extra allowed globals are not findings."""
        return [f for f in findings
                if not (f.kind == "global" and f.module is not None and f.name is not None
                        and self.allow.allows(f.module, f.name))]

    def blocking(self, findings: Sequence[Finding]) -> list[Finding]:
        out = []
        for f in self.relevant(findings):
            for entry in self.block_on:
                category, _, severity = entry.partition(":")
                if f.category != category:
                    continue
                if severity and _rank(f.severity) < _rank(severity):
                    continue
                out.append(f)
                break
        return out


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def policy_from_settings(p: ScanPolicySettings) -> ScanPolicy:
    return ScanPolicy(p.pattern, p.mode, tuple(p.block_on), p.pending,
                      Allowlist(p.allow_globals))


def select_scan_policy(policies: Sequence[ScanPolicy], repository: str) -> ScanPolicy | None:
    matching = [p for p in policies if p.matches(repository)]
    return max(matching, key=lambda p: specificity(p.pattern)) if matching else None
