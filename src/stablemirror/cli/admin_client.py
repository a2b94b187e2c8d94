"""The CLI's two ways to administer: in-process on a data dir (`--data-dir`, the server may
be running; workers notice the change through `auth_state.version`) or through the admin
API of a running server (`--url`). Both return the same JSON-shaped results.

Remote credentials: `--username` (default admin) and the password from STABLEMIRROR_PASSWORD,
else STABLEMIRROR_ADMIN_PASSWORD.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp

from stablemirror.api.admin import ADMIN_ROUTES
from stablemirror.audit.log import AuditQuery
from stablemirror.audit.report import build, parse_when, render
from stablemirror.auth.admin import AdminError
from stablemirror.auth.principals import ROBOT_PREFIX
from stablemirror.auth.store import Conflict
from stablemirror.compose.commands import AdminParts, administration
from stablemirror.config import load_settings
from stablemirror.registry.protocol import RequestContext


class CliError(Exception):
    """What went wrong, for the user; the CLI prints it and exits 1."""


class Backend(Protocol):
    async def call(self, op: str, **args: Any) -> Any: ...


class LocalBackend:
    def __init__(self, parts: AdminParts) -> None:
        self.admin = parts.admin
        self.audit = parts.audit
        user = os.environ.get("USER") or "unknown"
        self.ctx = RequestContext(actor=f"cli:{user}", client="local",
                                  user_agent="stablemirror-cli")

    async def call(self, op: str, **a: Any) -> Any:
        try:
            return await self._call(op, **a)
        except Conflict as err:
            raise CliError(str(err)) from None
        except AdminError as err:
            raise CliError(f"{err.field}: {err.reason}") from None

    async def _call(self, op: str, **a: Any) -> Any:
        if op not in OPERATIONS:
            raise CliError(f"unknown operation {op}")
        return await OPERATIONS[op].local(self, a)

    # -- each operation in-process: the same JSON-shaped result as the admin API's --------
    async def add_user(self, a: dict[str, Any]) -> Any:
        account = await self.admin.add_user(self.ctx, a["name"], a["password"], a["tags"],
                                            a["groups"], a["roles"])
        return account.to_json()

    async def update_user(self, a: dict[str, Any]) -> Any:
        await self.admin.update_user(self.ctx, a["name"], a.get("password"), a.get("tags"),
                                     a.get("groups"), a.get("disabled"))
        return {"updated": a["name"]}

    async def delete_user(self, a: dict[str, Any]) -> Any:
        await self.admin.delete_user(self.ctx, a["name"])
        return {"deleted": a["name"]}

    async def list_accounts(self, a: dict[str, Any]) -> Any:
        return [x.to_json() for x in await self.admin.list_accounts(a["kind"])]

    async def create_robot(self, a: dict[str, Any]) -> Any:
        expires = (time.time() + timedelta(days=a["expires_in_days"]).total_seconds()
                   if a.get("expires_in_days") else None)
        account, secret = await self.admin.create_robot(self.ctx, a["name"], a["roles"],
                                                        expires, a.get("description", ""))
        return {**account.to_json(), "username": ROBOT_PREFIX + account.name, "secret": secret}

    async def revoke_robot(self, a: dict[str, Any]) -> Any:
        await self.admin.revoke_robot(self.ctx, a["name"])
        return {"revoked": a["name"]}

    async def bindings(self, _a: dict[str, Any]) -> Any:
        return [b.to_json() for b in await self.admin.bindings()]

    async def bind(self, a: dict[str, Any]) -> Any:
        await self.admin.bind(self.ctx, a["principal_kind"], a["principal"], a["role"],
                              a["repositories"])
        return {"bound": a}

    async def unbind(self, a: dict[str, Any]) -> Any:
        await self.admin.unbind(self.ctx, a["principal_kind"], a["principal"], a["role"],
                                a["repositories"])
        return {"unbound": a}

    async def policies(self, _a: dict[str, Any]) -> Any:
        return await self.admin.policies()

    async def apply_policy(self, a: dict[str, Any]) -> Any:
        created = await self.admin.apply_policy(self.ctx, a["name"], a["document"])
        return {"applied": a["name"], "created": created}

    async def delete_policy(self, a: dict[str, Any]) -> Any:
        await self.admin.delete_policy(self.ctx, a["name"])
        return {"deleted": a["name"]}

    async def test_policy(self, a: dict[str, Any]) -> Any:
        decision = await self.admin.test(a["kind"], a["name"], a["action"], a["resource"],
                                         a.get("client", ""), a.get("tags"), a.get("groups"))
        return decision.to_json()

    async def rotate_key(self, _a: dict[str, Any]) -> Any:
        return {"kid": await self.admin.rotate_key(self.ctx)}

    async def audit_verify(self, _a: dict[str, Any]) -> Any:
        return (await self.audit.verify()).to_json()

    async def audit_prune(self, a: dict[str, Any]) -> Any:
        before = time.time() - timedelta(days=a["older_than_days"]).total_seconds()
        cp = await self.audit.prune_older_than(before, actor=self.ctx.actor or "")
        return {"checkpoint": None if cp is None else cp.payload}

    async def audit_report(self, a: dict[str, Any]) -> Any:
        try:
            since = parse_when(a["since"]) if a.get("since") else None
            until = parse_when(a["until"]) if a.get("until") else None
        except ValueError as err:
            raise CliError(f"since/until: {err}") from None
        report = build(await self.audit.query(AuditQuery(
            since=since, until=until, repository=a.get("repo"), actor=a.get("user"))))
        return report.to_json() if a["format"] == "json" else render(report, a["format"])


Where = Literal["body", "document", "query", "none"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One admin operation: where its arguments go in the admin API request (its route:
    api/admin.py ADMIN_ROUTES, by the same name), and the in-process way to do the same."""

    where: Where
    local: Callable[[LocalBackend, dict[str, Any]], Awaitable[Any]]


OPERATIONS: dict[str, Operation] = {
    "add_user": Operation("body", LocalBackend.add_user),
    "update_user": Operation("body", LocalBackend.update_user),
    "delete_user": Operation("none", LocalBackend.delete_user),
    "list": Operation("none", LocalBackend.list_accounts),  # list_users or list_robots
    "create_robot": Operation("body", LocalBackend.create_robot),
    "revoke_robot": Operation("none", LocalBackend.revoke_robot),
    "bindings": Operation("none", LocalBackend.bindings),
    "bind": Operation("body", LocalBackend.bind),
    "unbind": Operation("body", LocalBackend.unbind),
    "policies": Operation("none", LocalBackend.policies),
    "apply_policy": Operation("document", LocalBackend.apply_policy),
    "delete_policy": Operation("none", LocalBackend.delete_policy),
    "test_policy": Operation("body", LocalBackend.test_policy),
    "rotate_key": Operation("none", LocalBackend.rotate_key),
    "audit_verify": Operation("none", LocalBackend.audit_verify),
    "audit_prune": Operation("body", LocalBackend.audit_prune),
    "audit_report": Operation("query", LocalBackend.audit_report),
}


class RemoteBackend:
    def __init__(self, url: str, username: str) -> None:
        self.url = url.rstrip("/")
        password = (os.environ.get("STABLEMIRROR_PASSWORD")
                    or os.environ.get("STABLEMIRROR_ADMIN_PASSWORD"))
        if password is None:
            password = getpass.getpass(f"password for {username} at {self.url}: ")
        self.session = aiohttp.ClientSession(auth=aiohttp.BasicAuth(username, password),
                                             timeout=aiohttp.ClientTimeout(total=300))

    async def close(self) -> None:
        await self.session.close()

    async def call(self, op: str, **a: Any) -> Any:
        where = OPERATIONS[op].where
        method, template, _handler = ADMIN_ROUTES[f"list_{a['kind']}s" if op == "list" else op]
        path = template.format(**{k: v for k, v in a.items() if isinstance(v, str)})
        kwargs: dict[str, Any] = {}
        if where == "body":
            kwargs["json"] = _wire(op, a)
        elif where == "document":
            kwargs["json"] = a["document"]
        elif where == "query":
            kwargs["params"] = {k: str(v) for k, v in a.items() if v is not None}
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body: Any = await (resp.json() if "json" in ctype else resp.text())
            if resp.status >= 400:
                raise CliError(f"{method} {path}: HTTP {resp.status}: {_message(body)}")
            return body


def _wire(op: str, a: dict[str, Any]) -> dict[str, Any]:
    """CLI arguments -> admin API body (roles as objects)."""
    doc = dict(a)
    if "roles" in doc:
        doc["roles"] = [{"role": r, "repositories": p} for r, p in doc["roles"]]
    return doc


def _message(body: Any) -> str:
    if isinstance(body, dict) and body.get("errors"):
        return "; ".join(str(e.get("message", e)) for e in body["errors"])
    return str(body)[:500]


@asynccontextmanager
async def backend(data_dir: Path | None, config: Path | None, url: str | None,
                  username: str) -> AsyncIterator[Backend]:
    if url:
        remote = RemoteBackend(url, username)
        try:
            yield remote
        finally:
            await remote.close()
        return
    async with administration(load_settings(config, data_dir=data_dir)) as parts:
        yield LocalBackend(parts)
