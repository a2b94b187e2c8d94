"""Registry tokens: short-lived ES256 JWTs carrying the granted `access` claims, as the
Docker token specification describes, and refresh tokens for the OAuth2 flow.

Verification accepts ES256 only (so `alg: none` and HMAC-with-the-public-key confusion
fail), from a key in our ring, with our issuer and audience, unexpired.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from stablemirror.auth.keys import KeyRing
from stablemirror.auth.principals import Principal

LEEWAY = 5.0  # seconds of clock skew tolerated between replicas
DOCKER_ACTIONS = ("pull", "push", "delete")


class TokenInvalid(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Access:
    """One `access` entry: a resource and the actions granted (or requested) on it."""

    type: str  # "repository" | "registry"
    name: str
    actions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}

    @property
    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Access]:
    """`repository:team/x:pull,push` entries; several per value, space separated (OAuth2).
    The name sits between the first and the last colon (it may hold a host:port).
    Only a space separates (RFC 6749): a newline or tab stays inside its entry, where the
    name check refuses it, rather than silently splitting one entry into two."""
    out: list[Access] = []
    for value in values:
        for item in value.split(" "):
            typ, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if not typ or not name:
                continue
            acts = tuple(a for a in actions.split(",") if a)
            out.append(Access(typ, name, acts))
    return out


@dataclass(frozen=True)
class Claims:
    principal: Principal
    access: tuple[Access, ...]
    expires_at: float
    token_id: str

    def allows(self, type_: str, name: str, action: str) -> bool:
        return any(a.type == type_ and a.name == name and (action in a.actions or "*" in a.actions)
                   for a in self.access)


class TokenService:
    def __init__(self, keys: KeyRing, issuer: str, audience: str, ttl: int,
                 refresh_ttl: int) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl

    def _sign(self, who: Principal, use: str, ttl: int, extra: dict[str, Any]) -> str:
        now = int(time.time())
        key = self.keys.active
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": who.id, "iat": now, "nbf": now,
            "exp": now + ttl, "jti": secrets.token_hex(12), "use": use,
            "sm:kind": who.kind, "sm:name": who.name, "sm:idp": who.provider,
            "sm:tags": dict(who.tags), "sm:groups": list(who.groups), **extra,
        }
        return jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": key.kid})

    def issue_access(self, who: Principal, access: list[Access]) -> str:
        return self._sign(who, "access", self.ttl,
                          {"access": [a.to_json() for a in access]})

    def issue_refresh(self, who: Principal) -> str:
        return self._sign(who, "refresh", self.refresh_ttl, {})

    async def verify(self, token: str, use: str = "access") -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise TokenInvalid(f"malformed token: {err}") from None
        if header.get("alg") != "ES256":
            raise TokenInvalid(f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        key = await self.keys.public_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenInvalid("signed by an unknown key")
        try:
            claims = jwt.decode(
                token, key, algorithms=["ES256"], audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid("token is for another audience") from None
        except jwt.PyJWTError as err:
            raise TokenInvalid(f"token rejected: {err}") from None
        if claims.get("use") != use:
            raise TokenInvalid(f"not an {use} token")
        return _claims(claims)


def _claims(raw: dict[str, Any]) -> Claims:
    kind = raw.get("sm:kind")
    if kind not in ("user", "robot", "anonymous"):
        raise TokenInvalid("token names no principal")
    tags = raw.get("sm:tags") or {}
    groups = raw.get("sm:groups") or []
    who = Principal(kind, str(raw.get("sm:name", "")), str(raw.get("sm:idp", "local")),
                    {str(k): str(v) for k, v in tags.items()}, tuple(str(g) for g in groups))
    access = tuple(
        Access(str(a.get("type", "")), str(a.get("name", "")),
               tuple(str(x) for x in a.get("actions", [])))
        for a in raw.get("access", []) if isinstance(a, dict))
    return Claims(who, access, float(raw["exp"]), str(raw["jti"]))
