"""SemVer 2.0 versions as OCI tags (pure, no I/O).

OCI tags cannot hold `+` (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`), so a version tag writes the
build metadata after `_` instead: tag `1.2.0_build.5` is version `1.2.0+build.5`. `_` never
appears in a SemVer version, so the mapping is one to one. No leading `v`: `v1.2.0` is an
ordinary tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"0|[1-9]\d*"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER = re.compile(
    rf"^(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
# Floating tags: `1` and `1.2` follow the highest release of their line.
_FLOATING = re.compile(rf"^(?:{_NUM})(?:\.(?:{_NUM}))?$")

PreKey = tuple[tuple[int, int, str], ...]


@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @property
    def is_release(self) -> bool:
        return not self.prerelease

    @property
    def tag(self) -> str:
        """The OCI tag spelling (`+` written as `_`)."""
        return str(self).replace("+", "_")

    @property
    def line(self) -> tuple[int, int]:
        """The major/minor line this version belongs to."""
        return (self.major, self.minor)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text

    def sort_key(self) -> tuple[int, int, int, int, PreKey, str]:
        """SemVer precedence: numeric identifiers below alphanumeric ones, numbers compared
        as numbers, a shorter run of identifiers below a longer one it prefixes, a release
        above all its pre-releases. Build metadata has no precedence; it only breaks ties
        so that the order is total and stable."""
        pre: PreKey = tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                            for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre,
                self.build)

    def __lt__(self, other: Version) -> bool:
        return self.sort_key() < other.sort_key()

    def __le__(self, other: Version) -> bool:
        return self.sort_key() <= other.sort_key()

    def __gt__(self, other: Version) -> bool:
        return self.sort_key() > other.sort_key()

    def __ge__(self, other: Version) -> bool:
        return self.sort_key() >= other.sort_key()


def parse_version(text: str) -> Version | None:
    """A SemVer version (`1.2.0+b1`) or its tag spelling (`1.2.0_b1`); None otherwise."""
    if text.count("_") > 1 or ("_" in text and "+" in text):
        return None
    match = _SEMVER.fullmatch(text.replace("_", "+"))
    if match is None:
        return None
    pre = match["pre"]
    return Version(int(match["major"]), int(match["minor"]), int(match["patch"]),
                   tuple(pre.split(".")) if pre else (), match["build"] or "")


def is_version_tag(tag: str) -> bool:
    return parse_version(tag) is not None


def is_floating_tag(tag: str) -> bool:
    return bool(_FLOATING.fullmatch(tag))


def ordered(versions: list[Version]) -> list[Version]:
    """Oldest first, by SemVer precedence."""
    return sorted(versions, key=Version.sort_key)


def floating_targets(versions: list[Version]) -> dict[str, Version]:
    """`MAJOR.MINOR` and `MAJOR` -> the highest release (no pre-release) of that line."""
    targets: dict[str, Version] = {}
    for v in ordered([v for v in versions if v.is_release]):
        targets[f"{v.major}.{v.minor}"] = v
        targets[str(v.major)] = v
    return targets
