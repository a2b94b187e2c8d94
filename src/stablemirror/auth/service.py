"""Authentication and authorization decisions: who the caller is, what a token may grant,
whether a request may proceed.

Revocation: access tokens live `token_ttl_seconds` (default 5 minutes) and, on every
request, the account behind a local user's or robot's token is re-read: a revoked robot,
a disabled, expired or deleted account loses access on its next request, whatever its
token says. Policy changes reach tokens at their next grant (within one token lifetime).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from stablemirror.auth.oidc import OidcVerifier, looks_like_jwt
from stablemirror.auth.passwords import Passwords
from stablemirror.auth.policy import (
    ADMIN,
    DOCKER_TO_ACTION,
    REGISTRY_RESOURCE,
    Decision,
    PolicySet,
    Statement,
    build_policy_set,
    parse_policy,
    public_statement,
    repository_resource,
    request_context,
    role_statement,
)
from stablemirror.auth.principals import ANONYMOUS, LOCAL, Principal, split_login
from stablemirror.auth.store import AuthStore
from stablemirror.auth.tokens import Access, Claims, TokenInvalid, TokenService

CATALOG = Access("registry", "catalog", ("*",))


class LoginFailed(Exception):
    def __init__(self, reason: str, method: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.method = method


@dataclass(frozen=True)
class Login:
    principal: Principal
    method: str  # "password" | "robot" | "oidc" | "refresh" | "anonymous"


class PolicyCache:
    """The policy set, rebuilt only when `auth_state.version` moved (any worker's change)."""

    def __init__(self, store: AuthStore, public: list[str]) -> None:
        self.store = store
        self.public = public
        self._version = -1
        self._set = PolicySet()

    async def current(self) -> PolicySet:
        if await self.store.version() != self._version:
            snap = await self.store.snapshot()
            roles = [role_statement(b.principal_kind, b.principal, b.role, b.pattern)
                     for b in snap.bindings]
            policies: list[Statement] = []
            for name, text in snap.policies:
                policies.extend(parse_policy(name, json.loads(text)))
            self._set = build_policy_set(roles, public_statement(self.public), policies)
            self._version = snap.version
        return self._set

    async def decide(self, who: Principal, action: str, resource: str, client: str = "",
                     user_agent: str = "") -> Decision:
        context = request_context(who, client, user_agent, time.time())
        return (await self.current()).evaluate(who, action, resource, context)


class AuthService:
    def __init__(self, store: AuthStore, policies: PolicyCache, tokens: TokenService,
                 passwords: Passwords, oidc: OidcVerifier | None) -> None:
        self.store = store
        self.policies = policies
        self.tokens = tokens
        self.passwords = passwords
        self.oidc = oidc

    async def login(self, username: str, password: str) -> Login:
        if self.oidc is not None and looks_like_jwt(password) and self.oidc.provider_for(password):
            try:
                return Login(await self.oidc.verify(password), "oidc")
            except TokenInvalid as err:
                raise LoginFailed(err.reason, "oidc") from None
        kind, name = split_login(username)
        method = "robot" if kind == "robot" else "password"
        account = await self.store.get_account(kind, name)
        if not await self.passwords.verify(account.secret_hash if account else None, password):
            raise LoginFailed("wrong username or password", method)
        assert account is not None
        reason = account.unusable(time.time())
        if reason is not None:
            raise LoginFailed(f"account {reason}", method)
        return Login(account.principal(), method)

    async def refresh(self, token: str) -> Login:
        try:
            claims = await self.tokens.verify(token, use="refresh")
            return Login(await self.current(claims.principal), "refresh")
        except TokenInvalid as err:
            raise LoginFailed(err.reason, "refresh") from None

    async def current(self, who: Principal) -> Principal:
        """The principal as it stands now; TokenInvalid if its account may no longer act.
        Federated users have no account here: their IdP and the token lifetime bound them."""
        if who.provider != LOCAL or not who.authenticated:
            return who
        account = await self.store.get_account(who.kind, who.name)
        if account is None:
            raise TokenInvalid(f"{who.kind} {who.name!r} no longer exists")
        reason = account.unusable(time.time())
        if reason is not None:
            raise TokenInvalid(f"{who.kind} {who.name!r} is {reason}")
        return account.principal()

    async def bearer(self, token: str) -> Claims:
        """Verify an access token and re-check its principal (revocation)."""
        claims = await self.tokens.verify(token)
        who = await self.current(claims.principal)
        return Claims(who, claims.access, claims.expires_at, claims.token_id)

    async def decide(self, who: Principal, action: str, resource: str, client: str = "",
                     user_agent: str = "") -> Decision:
        return await self.policies.decide(who, action, resource, client, user_agent)

    async def grant(self, who: Principal, requested: list[Access], client: str,
                    user_agent: str) -> list[Access]:
        """The part of `requested` that policy allows; never more (scope escalation)."""
        granted: list[Access] = []
        for want in requested:
            if want.type == "registry" and want.name == "catalog":
                d = await self.decide(who, ADMIN, REGISTRY_RESOURCE, client, user_agent)
                if d.allowed:
                    granted.append(CATALOG)
                continue
            if want.type != "repository":
                continue
            names = DOCKER_TO_ACTION if "*" in want.actions else {
                a: DOCKER_TO_ACTION[a] for a in want.actions if a in DOCKER_TO_ACTION}
            allowed = [
                docker for docker, action in names.items()
                if (await self.decide(who, action, repository_resource(want.name), client,
                                      user_agent)).allowed]
            if allowed:
                granted.append(Access("repository", want.name, tuple(allowed)))
        return granted

    @staticmethod
    def anonymous() -> Login:
        return Login(ANONYMOUS, "anonymous")
