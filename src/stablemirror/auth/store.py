"""Accounts, role bindings and policy documents in the index database.

Every change bumps `auth_state.version` (so each worker reloads its cached policy set only
when something changed) and appends its audit record in the same transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from stablemirror.auth.principals import Principal, PrincipalKind
from stablemirror.index.audit_chain import append
from stablemirror.index.audit_events import AuditEvent
from stablemirror.index.db import Database
from stablemirror.index.schema_auth import auth_bindings, auth_policies, auth_principals, auth_state

T = TypeVar("T")


class Conflict(Exception):
    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"{what} {name!r} already exists")
        self.what = what
        self.name = name


@dataclass(frozen=True)
class Account:
    kind: PrincipalKind
    name: str
    secret_hash: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    description: str = ""
    disabled: bool = False
    expires_at: float | None = None
    revoked_at: float | None = None
    created_at: float = 0.0
    created_by: str = ""

    def principal(self) -> Principal:
        return Principal(self.kind, self.name, "local", dict(self.tags), self.groups)

    def unusable(self, now: float) -> str | None:
        """Why this account may not act right now, or None."""
        if self.revoked_at is not None:
            return "revoked"
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "tags": self.tags,
                "groups": list(self.groups), "description": self.description,
                "disabled": self.disabled, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at, "created_at": self.created_at,
                "created_by": self.created_by}


@dataclass(frozen=True)
class Binding:
    principal_kind: str
    principal: str
    role: str
    pattern: str

    def to_json(self) -> dict[str, str]:
        return {"principal_kind": self.principal_kind, "principal": self.principal,
                "role": self.role, "repositories": self.pattern}


@dataclass(frozen=True)
class Snapshot:
    version: int
    bindings: list[Binding]
    policies: list[tuple[str, str]]  # (name, JSON document)


def _account(row: Any) -> Account:
    m = row._mapping
    return Account(m["kind"], m["name"], m["secret_hash"], json.loads(m["tags"]),
                   tuple(json.loads(m["groups"])), m["description"], bool(m["disabled"]),
                   m["expires_at"], m["revoked_at"], m["created_at"], m["created_by"])


def _bump(conn: Connection) -> None:
    conn.execute(update(auth_state).where(auth_state.c.id == 1)
                 .values(version=auth_state.c.version + 1))


class AuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _change(self, fn: Callable[[Connection], T], audit: AuditEvent | None) -> T:
        def run(conn: Connection) -> T:
            result = fn(conn)
            if result is False:
                return result  # nothing changed (not found, already there): nothing to record
            _bump(conn)
            if audit is not None:
                append(conn, audit)
            return result
        return await self.db.write(run)

    # -- accounts ----------------------------------------------------------------------------
    async def get_account(self, kind: str, name: str) -> Account | None:
        q = select(auth_principals).where(auth_principals.c.kind == kind,
                                          auth_principals.c.name == name)
        row = await self.db.read(lambda c: c.execute(q).first())
        return None if row is None else _account(row)

    async def list_accounts(self, kind: str | None = None) -> list[Account]:
        q = select(auth_principals).order_by(auth_principals.c.kind, auth_principals.c.name)
        if kind is not None:
            q = q.where(auth_principals.c.kind == kind)
        rows = await self.db.read(lambda c: c.execute(q).all())
        return [_account(r) for r in rows]

    async def create_account(self, account: Account, bindings: list[Binding],
                             audit: AuditEvent | None, if_absent: bool = False) -> bool:
        """Insert the account and its bindings; False (if_absent) or Conflict when it exists."""
        def run(conn: Connection) -> bool:
            exists = conn.execute(select(auth_principals.c.id).where(
                auth_principals.c.kind == account.kind,
                auth_principals.c.name == account.name)).first()
            if exists is not None:
                if if_absent:
                    return False
                raise Conflict(account.kind, account.name)
            conn.execute(auth_principals.insert().values(
                kind=account.kind, name=account.name, secret_hash=account.secret_hash,
                tags=json.dumps(account.tags, sort_keys=True),
                groups=json.dumps(list(account.groups)), description=account.description,
                disabled=account.disabled, expires_at=account.expires_at,
                revoked_at=None, created_at=account.created_at or time.time(),
                created_by=account.created_by))
            for b in bindings:
                self._insert_binding(conn, b)
            return True

        try:
            return await self._change(run, audit)
        except IntegrityError:
            if if_absent:
                return False
            raise Conflict(account.kind, account.name) from None

    async def update_account(self, kind: str, name: str, values: dict[str, Any],
                             audit: AuditEvent | None) -> bool:
        def run(conn: Connection) -> bool:
            r = conn.execute(update(auth_principals).where(
                auth_principals.c.kind == kind, auth_principals.c.name == name).values(**values))
            return r.rowcount > 0
        return await self._change(run, audit)

    async def delete_account(self, kind: str, name: str, audit: AuditEvent | None) -> bool:
        def run(conn: Connection) -> bool:
            r = conn.execute(delete(auth_principals).where(
                auth_principals.c.kind == kind, auth_principals.c.name == name))
            conn.execute(delete(auth_bindings).where(auth_bindings.c.principal_kind == kind,
                                                     auth_bindings.c.principal == name))
            return r.rowcount > 0
        return await self._change(run, audit)

    # -- bindings and policies ------------------------------------------------------------------
    @staticmethod
    def _insert_binding(conn: Connection, b: Binding) -> None:
        exists = conn.execute(select(auth_bindings.c.id).where(
            auth_bindings.c.principal_kind == b.principal_kind,
            auth_bindings.c.principal == b.principal, auth_bindings.c.role == b.role,
            auth_bindings.c.pattern == b.pattern)).first()
        if exists is None:
            conn.execute(auth_bindings.insert().values(
                principal_kind=b.principal_kind, principal=b.principal, role=b.role,
                pattern=b.pattern, created_at=time.time()))

    async def add_binding(self, b: Binding, audit: AuditEvent | None) -> None:
        await self._change(lambda c: self._insert_binding(c, b), audit)

    async def remove_binding(self, b: Binding, audit: AuditEvent | None) -> bool:
        def run(conn: Connection) -> bool:
            r = conn.execute(delete(auth_bindings).where(
                auth_bindings.c.principal_kind == b.principal_kind,
                auth_bindings.c.principal == b.principal, auth_bindings.c.role == b.role,
                auth_bindings.c.pattern == b.pattern))
            return r.rowcount > 0
        return await self._change(run, audit)

    async def put_policy(self, name: str, document: str, audit: AuditEvent | None) -> bool:
        """Create or replace; True when it was new."""
        def run(conn: Connection) -> str:
            now = time.time()
            r = conn.execute(update(auth_policies).where(auth_policies.c.name == name)
                             .values(document=document, updated_at=now))
            if r.rowcount:
                return "replaced"
            conn.execute(auth_policies.insert().values(name=name, document=document,
                                                       created_at=now, updated_at=now))
            return "created"
        return await self._change(run, audit) == "created"

    async def delete_policy(self, name: str, audit: AuditEvent | None) -> bool:
        def run(conn: Connection) -> bool:
            return conn.execute(delete(auth_policies)
                                .where(auth_policies.c.name == name)).rowcount > 0
        return await self._change(run, audit)

    async def version(self) -> int:
        q = select(auth_state.c.version).where(auth_state.c.id == 1)
        return int(await self.db.read(lambda c: c.execute(q).scalar_one()))

    async def snapshot(self) -> Snapshot:
        def run(conn: Connection) -> Snapshot:
            version = conn.execute(select(auth_state.c.version)
                                   .where(auth_state.c.id == 1)).scalar_one()
            bindings = [Binding(*r) for r in conn.execute(
                select(auth_bindings.c.principal_kind, auth_bindings.c.principal,
                       auth_bindings.c.role, auth_bindings.c.pattern)
                .order_by(auth_bindings.c.id)).all()]
            policies = [(r[0], r[1]) for r in conn.execute(
                select(auth_policies.c.name, auth_policies.c.document)
                .order_by(auth_policies.c.name)).all()]
            return Snapshot(int(version), bindings, policies)
        return await self.db.read(run)
