"""What a rule copies (pure): repository globs, a tag regex or SemVer range, platforms.

`tags` is a regular expression matched against the whole tag, or `semver:RANGE`: space- or
comma-separated comparators (`>=1.2.0 <2.0.0`, `^1.2`, `~1.4.0`, `1.2.3`) that every version
must satisfy (a leading `v` on a tag is ignored). Tags that are cosign's
(`sha256-<hex>.sig|.att|.sbom`) or the referrers fallback (`sha256-<hex>`) are never
selected on their own: they travel with the manifest they belong to."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from stablemirror.releases.semver import Version, parse_version

ATTACHED_TAG = re.compile(r"^(sha256|sha512)-[0-9a-f]{64,128}(\.(sig|att|sbom))?$")
_COMPARATOR = re.compile(r"^(>=|<=|>|<|=|\^|~)?v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(-[0-9A-Za-z.-]+)?$")


class FilterInvalid(ValueError):
    pass


def _version(major: int, minor: int, patch: int, pre: str | None) -> Version:
    v = parse_version(f"{major}.{minor}.{patch}{pre or ''}")
    if v is None:
        raise FilterInvalid(f"{major}.{minor}.{patch}{pre or ''} is not a version")
    return v


@dataclass(frozen=True, slots=True)
class SemverRange:
    """Half-open intervals, all of which a version must be in: (low, low inclusive,
    high, high inclusive); None bounds are open."""

    text: str
    bounds: tuple[tuple[Version | None, bool, Version | None, bool], ...]

    def admits(self, v: Version) -> bool:
        for low, low_in, high, high_in in self.bounds:
            if low is not None and (v < low or (v == low and not low_in)):
                return False
            if high is not None and (v > high or (v == high and not high_in)):
                return False
        return True


def parse_semver_range(text: str) -> SemverRange:
    bounds: list[tuple[Version | None, bool, Version | None, bool]] = []
    for token in text.replace(",", " ").split():
        m = _COMPARATOR.match(token)
        if m is None:
            raise FilterInvalid(f"semver range {text!r}: cannot read {token!r}")
        op, major_s, minor_s, patch_s, pre = m.groups()
        major, minor, patch = int(major_s), int(minor_s or 0), int(patch_s or 0)
        v = _version(major, minor, patch, pre)
        if op in (None, "=") and minor_s is not None and patch_s is not None:
            bounds.append((v, True, v, True))
        elif op in (None, "="):  # `1` or `1.2`: that line
            high = _version(major + 1, 0, 0, None) if minor_s is None else \
                _version(major, minor + 1, 0, None)
            bounds.append((v, True, high, False))
        elif op == ">=":
            bounds.append((v, True, None, False))
        elif op == ">":
            bounds.append((v, False, None, False))
        elif op == "<=":
            bounds.append((None, False, v, True))
        elif op == "<":
            bounds.append((None, False, v, False))
        elif op == "^":
            high = (_version(major + 1, 0, 0, None) if major else
                    _version(0, minor + 1, 0, None) if minor else _version(0, 0, patch + 1, None))
            bounds.append((v, True, high, False))
        else:  # "~"
            high = _version(major, minor + 1, 0, None) if minor_s is not None else \
                _version(major + 1, 0, 0, None)
            bounds.append((v, True, high, False))
    if not bounds:
        raise FilterInvalid("semver range is empty")
    return SemverRange(text, tuple(bounds))


@dataclass(frozen=True, slots=True)
class TagFilter:
    regex: re.Pattern[str] | None = None
    semver: SemverRange | None = None

    def admits(self, tag: str) -> bool:
        if ATTACHED_TAG.match(tag):
            return False
        if self.semver is not None:
            v = parse_version(tag.removeprefix("v"))
            return v is not None and self.semver.admits(v)
        return self.regex is None or self.regex.fullmatch(tag) is not None


def parse_tag_filter(text: str | None) -> TagFilter:
    if not text:
        return TagFilter()
    if text.startswith("semver:"):
        return TagFilter(semver=parse_semver_range(text.removeprefix("semver:")))
    try:
        return TagFilter(regex=re.compile(text))
    except re.error as e:
        raise FilterInvalid(f"not a regular expression: {e}") from None


def repository_matches(repository: str, globs: list[str]) -> bool:
    """fnmatch globs (`*` crosses `/`); no globs: every repository."""
    return not globs or any(fnmatch.fnmatchcase(repository, g) for g in globs)
