"""Administration of users, robots, role bindings, policies and keys.

One implementation behind both the admin API and the CLI's `--data-dir` mode; every change
is audited in the transaction that makes it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection

from stablemirror.auth import keys
from stablemirror.auth.conditions import PolicyError
from stablemirror.auth.passwords import Passwords, new_robot_secret
from stablemirror.auth.policy import ROLES, Decision, parse_policy
from stablemirror.auth.principals import ANONYMOUS, ROBOT_PREFIX, Principal, valid_name
from stablemirror.auth.service import PolicyCache
from stablemirror.auth.store import Account, AuthStore, Binding
from stablemirror.index.audit_chain import append
from stablemirror.index.audit_events import AuditEvent
from stablemirror.index.db import Database
from stablemirror.registry.protocol import RequestContext

ADMIN_USER = "admin"


class AdminError(Exception):
    status = 400

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(AdminError):
    status = 404


class Invalid(AdminError):
    status = 400


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise Invalid("name", "use 1-64 of a-z 0-9 . _ @ - starting with a letter or digit")


def _bindings(kind: str, name: str, roles: list[tuple[str, str]]) -> list[Binding]:
    out = []
    for role, pattern in roles:
        if role not in ROLES:
            raise Invalid("role", f"unknown role {role!r}; use one of {sorted(ROLES)}")
        if not pattern:
            raise Invalid("repositories", "a role needs a repository pattern")
        out.append(Binding(kind, name, role, pattern))
    return out


class AuthAdmin:
    def __init__(self, db: Database, store: AuthStore, passwords: Passwords,
                 policies: PolicyCache, key_grace_seconds: float) -> None:
        self.db = db
        self.store = store
        self.passwords = passwords
        self.policy_cache = policies
        self.key_grace_seconds = key_grace_seconds

    @staticmethod
    def _event(ctx: RequestContext, action: str, **detail: Any) -> AuditEvent:
        return AuditEvent(action=action, actor=ctx.actor or "", client=ctx.client,
                          user_agent=ctx.user_agent, request_id=ctx.request_id,
                          reference=str(detail.get("name", "")), detail=detail)

    # -- users -------------------------------------------------------------------------------
    async def add_user(self, ctx: RequestContext, name: str, password: str,
                       tags: dict[str, str], groups: list[str],
                       roles: list[tuple[str, str]]) -> Account:
        _check_name(name)
        if len(password) < 8:
            raise Invalid("password", "use at least 8 characters")
        account = Account("user", name, self.passwords.hash(password), dict(tags),
                          tuple(groups), created_at=time.time(), created_by=ctx.actor or "")
        await self.store.create_account(
            account, _bindings("user", name, roles),
            self._event(ctx, "user.add", name=name, tags=tags, groups=groups,
                        roles=[list(r) for r in roles]))
        return account

    async def update_user(self, ctx: RequestContext, name: str, password: str | None = None,
                          tags: dict[str, str] | None = None, groups: list[str] | None = None,
                          disabled: bool | None = None) -> None:
        values: dict[str, Any] = {}
        if password is not None:
            values["secret_hash"] = self.passwords.hash(password)
        if tags is not None:
            values["tags"] = json.dumps(tags, sort_keys=True)
        if groups is not None:
            values["groups"] = json.dumps(groups)
        if disabled is not None:
            values["disabled"] = disabled
        if not values:
            raise Invalid("user", "nothing to change")
        shown = {k: v for k, v in values.items() if k != "secret_hash"}
        event = self._event(ctx, "user.update", name=name, changed=sorted(values), **shown)
        if not await self.store.update_account("user", name, values, event):
            raise NotFound("user", f"no user {name!r}")

    async def delete_user(self, ctx: RequestContext, name: str) -> None:
        if not await self.store.delete_account("user", name,
                                               self._event(ctx, "user.delete", name=name)):
            raise NotFound("user", f"no user {name!r}")

    async def bootstrap_admin(self, password: str) -> bool:
        """Create `admin` (role admin on every repository) unless it exists."""
        account = Account("user", ADMIN_USER, self.passwords.hash(password),
                          created_by="bootstrap")
        event = AuditEvent(action="user.add", actor="bootstrap", reference=ADMIN_USER,
                           detail={"name": ADMIN_USER, "roles": [["admin", "*"]]})
        return await self.store.create_account(
            account, [Binding("user", ADMIN_USER, "admin", "*")], event, if_absent=True)

    # -- robots ------------------------------------------------------------------------------
    async def create_robot(self, ctx: RequestContext, name: str, roles: list[tuple[str, str]],
                           expires_at: float | None, description: str = "",
                           ) -> tuple[Account, str]:
        """A robot scoped to `roles`; returns the account and its secret (shown once)."""
        _check_name(name)
        if not roles:
            raise Invalid("roles", "a robot needs at least one role on a repository pattern")
        if expires_at is not None and expires_at <= time.time():
            raise Invalid("expires", "already in the past")
        secret, stored = new_robot_secret()
        account = Account("robot", name, stored, description=description,
                          expires_at=expires_at, created_at=time.time(),
                          created_by=ctx.actor or "")
        await self.store.create_account(
            account, _bindings("robot", name, roles),
            self._event(ctx, "robot.create", name=name, roles=[list(r) for r in roles],
                        expires_at=expires_at))
        return account, secret

    async def revoke_robot(self, ctx: RequestContext, name: str) -> None:
        event = self._event(ctx, "robot.revoke", name=name)
        if not await self.store.update_account("robot", name, {"revoked_at": time.time()},
                                               event):
            raise NotFound("robot", f"no robot {name!r}")

    async def list_accounts(self, kind: str | None) -> list[Account]:
        return await self.store.list_accounts(kind)

    # -- bindings ----------------------------------------------------------------------------
    async def bind(self, ctx: RequestContext, kind: str, principal: str, role: str,
                   pattern: str) -> None:
        if kind not in ("user", "robot", "group"):
            raise Invalid("principal_kind", "use user, robot or group")
        (b,) = _bindings(kind, principal, [(role, pattern)])
        await self.store.add_binding(b, self._event(ctx, "role.bind", **b.to_json()))

    async def unbind(self, ctx: RequestContext, kind: str, principal: str, role: str,
                     pattern: str) -> None:
        b = Binding(kind, principal, role, pattern)
        if not await self.store.remove_binding(b, self._event(ctx, "role.unbind",
                                                              **b.to_json())):
            raise NotFound("binding", "no such role binding")

    async def bindings(self) -> list[Binding]:
        return (await self.store.snapshot()).bindings

    # -- policies ----------------------------------------------------------------------------
    async def apply_policy(self, ctx: RequestContext, name: str, document: object) -> bool:
        if not name or len(name) > 128:
            raise Invalid("name", "a policy needs a name of at most 128 characters")
        try:
            statements = parse_policy(name, document)
        except PolicyError as err:
            raise Invalid(f"policy.{err.field}", err.reason) from None
        text = json.dumps(document, sort_keys=True)
        return await self.store.put_policy(
            name, text, self._event(ctx, "policy.apply", name=name,
                                    statements=len(statements), document=document))

    async def delete_policy(self, ctx: RequestContext, name: str) -> None:
        if not await self.store.delete_policy(name, self._event(ctx, "policy.delete",
                                                                name=name)):
            raise NotFound("policy", f"no policy {name!r}")

    async def policies(self) -> dict[str, Any]:
        return {name: json.loads(text) for name, text in (await self.store.snapshot()).policies}

    async def test(self, kind: str, name: str, action: str, resource: str,
                   client: str = "", tags: dict[str, str] | None = None,
                   groups: list[str] | None = None) -> Decision:
        """Evaluate a request as `policy test` describes it, naming the deciding statement.
        Local users and robots are looked up; other names (PROVIDER:USER) are federated
        users described by `tags` and `groups`."""
        who: Principal
        if kind == "anonymous":
            who = ANONYMOUS
        else:
            if kind == "robot" and name.startswith(ROBOT_PREFIX):
                name = name[len(ROBOT_PREFIX):]
            account = await self.store.get_account(kind, name)
            if account is not None:
                who = account.principal()
            elif kind == "user" and ":" in name:
                who = Principal("user", name, name.split(":", 1)[0], {}, ())
            else:
                raise NotFound(kind, f"no {kind} {name!r}")
            if tags or groups:
                who = Principal(who.kind, who.name, who.provider,
                                {**who.tags, **(tags or {})}, (*who.groups, *(groups or [])))
        return await self.policy_cache.decide(who, action, resource, client)

    # -- keys ------------------------------------------------------------------------------
    async def rotate_key(self, ctx: RequestContext) -> str:
        def run(conn: Connection) -> str:
            kid = keys.rotate(conn, self.key_grace_seconds)
            append(conn, self._event(ctx, "key.rotate", kid=kid))
            return kid
        return await self.db.write(run)
