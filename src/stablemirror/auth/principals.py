"""Who is asking: a principal and the names it may carry (pure, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["user", "robot", "anonymous"]

# Local user and robot names: short, shell-safe, and never containing ':' (Basic auth
# splits on it) or '+' (reserved for the robot prefix below).
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
ROBOT_PREFIX = "robot+"
LOCAL = "local"


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    name: str
    provider: str = LOCAL  # "local" or the name of the OIDC provider that vouched for it
    tags: Mapping[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The identity as audit records and the `sub` claim show it."""
        if self.kind == "robot":
            return ROBOT_PREFIX + self.name
        return self.name

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"


ANONYMOUS = Principal("anonymous", "anonymous")


def split_login(login: str) -> tuple[PrincipalKind, str]:
    """A login name as typed (`alice`, `robot+ci`) -> (kind, name)."""
    if login.startswith(ROBOT_PREFIX):
        return "robot", login[len(ROBOT_PREFIX):]
    return "user", login
