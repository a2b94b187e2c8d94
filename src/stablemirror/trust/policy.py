"""Trust policies: per repository pattern, the signer roles required and their keys.

Policies come from the config file and from the index (`stablemirror trust set`); for the
same pattern the index wins. A repository gets the most specific matching pattern: the one
with the most literal (non-wildcard) characters, an exact name beating any wildcard.
Servers re-read the index every `refresh_seconds`, so a change needs no restart.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from stablemirror.index.trust_rows import PolicyKeyRow, PolicyRow, TrustIndex
from stablemirror.oci.patterns import fnmatch_match

# Keys are parsed (trust/keys.py: cryptography, PyNaCl) when a policy names one: a server
# without trust policies never loads them (docs/footprint.md).
if TYPE_CHECKING:
    from stablemirror.trust.keys import PublicKey

PolicyMode = Literal["enforce", "warn", "off"]
MODES: tuple[PolicyMode, ...] = ("enforce", "warn", "off")
_WILDCARDS = frozenset("*?[]")


@dataclass(frozen=True, slots=True)
class RoleKey:
    role: str
    key_id: str
    label: str
    key: PublicKey

    def row(self) -> PolicyKeyRow:
        from stablemirror.trust.keys import public_pem

        return PolicyKeyRow(self.role, self.key_id, public_pem(self.key).decode(), self.label)


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    pattern: str
    mode: PolicyMode
    keys: tuple[RoleKey, ...]
    source: str = "index"  # index | config

    @property
    def roles(self) -> list[str]:
        return sorted({k.role for k in self.keys})

    @property
    def fingerprint(self) -> str:
        """Changes whenever the roles or keys do (verification results are cached by it)."""
        text = "|".join(sorted(f"{k.role}={k.key_id}" for k in self.keys))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches(self, repository: str) -> bool:
        return fnmatch_match(self.pattern, repository)


def specificity(pattern: str) -> tuple[int, int, int]:
    literal = sum(1 for ch in pattern if ch not in _WILDCARDS)
    exact = 0 if _WILDCARDS & set(pattern) else 1
    return exact, literal, len(pattern)


def select_policy(policies: Sequence[TrustPolicy], repository: str) -> TrustPolicy | None:
    matching = [p for p in policies if p.matches(repository)]
    return max(matching, key=lambda p: specificity(p.pattern)) if matching else None


def check_mode(mode: str) -> PolicyMode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def check_pattern(pattern: str) -> str:
    if not pattern or len(pattern) > 255 or any(ch.isspace() for ch in pattern):
        raise ValueError(f"invalid repository pattern {pattern!r}")
    return pattern


def check_role(role: str) -> str:
    if not role or len(role) > 64 or not all(ch.isalnum() or ch in "-_." for ch in role):
        raise ValueError(f"invalid role name {role!r} (letters, digits, - _ .)")
    return role


def role_key(role: str, pem: bytes, label: str) -> RoleKey:
    from stablemirror.trust.keys import key_id, load_public_key

    key = load_public_key(pem)
    return RoleKey(check_role(role), key_id(key), label[:255], key)


def read_role_key(role: str, spec: str, base: Path | None = None) -> RoleKey:
    """A key given as inline PEM or as a path to a PEM file (relative to `base`)."""
    if spec.lstrip().startswith("-----BEGIN"):
        return role_key(role, spec.encode(), "inline")
    path = Path(spec).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return role_key(role, path.read_bytes(), path.name)


def parse_requirement(text: str) -> tuple[str, str]:
    """`developer=dev.pub` -> ("developer", "dev.pub")."""
    role, sep, spec = text.partition("=")
    if not sep or not spec:
        raise ValueError(f"expected ROLE=PUBLIC_KEY_FILE, got {text!r}")
    return check_role(role.strip()), spec.strip()


def policy_from_config(pattern: str, mode: str, require: Mapping[str, Sequence[str]],
                       base: Path | None = None) -> TrustPolicy:
    keys = tuple(read_role_key(role, spec, base) for role, specs in require.items()
                 for spec in specs)
    if not keys and mode != "off":
        raise ValueError(f"policy {pattern!r} requires no signer")
    return TrustPolicy(check_pattern(pattern), check_mode(mode), keys, "config")


class PolicySource:
    """Config policies plus index policies, re-read from the index every `ttl` seconds."""

    def __init__(self, index: TrustIndex | None, config: Sequence[TrustPolicy] = (),
                 ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.index = index
        self.config = list(config)
        self.ttl = ttl
        self.clock = clock
        self._loaded_at: float | None = None
        self._policies: list[TrustPolicy] = list(config)
        self._parsed: dict[tuple[str, str, str], RoleKey] = {}

    def _from_row(self, row: PolicyRow) -> TrustPolicy:
        keys: list[RoleKey] = []
        for k in row.keys:
            cache_key = (k.role, k.key_id, k.label)
            parsed = self._parsed.get(cache_key)
            if parsed is None:
                from stablemirror.trust.keys import load_public_key

                parsed = RoleKey(k.role, k.key_id, k.label, load_public_key(k.public_key.encode()))
                self._parsed[cache_key] = parsed
            keys.append(parsed)
        return TrustPolicy(row.pattern, check_mode(row.mode), tuple(keys), "index")

    async def policies(self) -> list[TrustPolicy]:
        now = self.clock()
        due = self._loaded_at is None or now - self._loaded_at >= self.ttl
        if self.index is not None and due:
            stored = [self._from_row(row) for row in await self.index.list_policies()]
            overridden = {p.pattern for p in stored}
            self._policies = [p for p in self.config if p.pattern not in overridden] + stored
            self._loaded_at = now
        return self._policies

    async def for_repository(self, repository: str) -> TrustPolicy | None:
        return select_policy(await self.policies(), repository)
