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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp

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
        adm, ctx = self.admin, self.ctx
        if op == "add_user":
            account = await adm.add_user(ctx, a["name"], a["password"], a["tags"],
                                         a["groups"], a["roles"])
            return account.to_json()
        if op == "update_user":
            await adm.update_user(ctx, a["name"], a.get("password"), a.get("tags"),
                                  a.get("groups"), a.get("disabled"))
            return {"updated": a["name"]}
        if op == "delete_user":
            await adm.delete_user(ctx, a["name"])
            return {"deleted": a["name"]}
        if op == "list":
            return [x.to_json() for x in await adm.list_accounts(a["kind"])]
        if op == "create_robot":
            expires = (time.time() + timedelta(days=a["expires_in_days"]).total_seconds()
                       if a.get("expires_in_days") else None)
            account, secret = await adm.create_robot(ctx, a["name"], a["roles"], expires,
                                                     a.get("description", ""))
            return {**account.to_json(), "username": ROBOT_PREFIX + account.name,
                    "secret": secret}
        if op == "revoke_robot":
            await adm.revoke_robot(ctx, a["name"])
            return {"revoked": a["name"]}
        if op == "bindings":
            return [b.to_json() for b in await adm.bindings()]
        if op in ("bind", "unbind"):
            fn = adm.bind if op == "bind" else adm.unbind
            await fn(ctx, a["principal_kind"], a["principal"], a["role"], a["repositories"])
            return {"bound" if op == "bind" else "unbound": a}
        if op == "policies":
            return await adm.policies()
        if op == "apply_policy":
            created = await adm.apply_policy(ctx, a["name"], a["document"])
            return {"applied": a["name"], "created": created}
        if op == "delete_policy":
            await adm.delete_policy(ctx, a["name"])
            return {"deleted": a["name"]}
        if op == "test_policy":
            decision = await adm.test(a["kind"], a["name"], a["action"], a["resource"],
                                      a.get("client", ""), a.get("tags"), a.get("groups"))
            return decision.to_json()
        if op == "rotate_key":
            return {"kid": await adm.rotate_key(ctx)}
        if op == "audit_verify":
            return (await self.audit.verify()).to_json()
        if op == "audit_prune":
            before = time.time() - timedelta(days=a["older_than_days"]).total_seconds()
            cp = await self.audit.prune_older_than(before, actor=ctx.actor or "")
            return {"checkpoint": None if cp is None else cp.payload}
        if op == "audit_report":
            try:
                since = parse_when(a["since"]) if a.get("since") else None
                until = parse_when(a["until"]) if a.get("until") else None
            except ValueError as err:
                raise CliError(f"since/until: {err}") from None
            report = build(await self.audit.query(AuditQuery(
                since=since, until=until, repository=a.get("repo"), actor=a.get("user"))))
            return report.to_json() if a["format"] == "json" else render(report, a["format"])
        raise CliError(f"unknown operation {op}")


# op -> (method, path template, where the arguments go)
ROUTES: dict[str, tuple[str, str, str]] = {
    "add_user": ("POST", "/api/v1/users", "body"),
    "update_user": ("PATCH", "/api/v1/users/{name}", "body"),
    "delete_user": ("DELETE", "/api/v1/users/{name}", "none"),
    "create_robot": ("POST", "/api/v1/robots", "body"),
    "revoke_robot": ("DELETE", "/api/v1/robots/{name}", "none"),
    "bindings": ("GET", "/api/v1/bindings", "none"),
    "bind": ("POST", "/api/v1/bindings", "body"),
    "unbind": ("DELETE", "/api/v1/bindings", "body"),
    "policies": ("GET", "/api/v1/policies", "none"),
    "apply_policy": ("PUT", "/api/v1/policies/{name}", "document"),
    "delete_policy": ("DELETE", "/api/v1/policies/{name}", "none"),
    "test_policy": ("POST", "/api/v1/policy-test", "body"),
    "rotate_key": ("POST", "/api/v1/keys/rotate", "none"),
    "audit_verify": ("GET", "/api/v1/audit/verify", "none"),
    "audit_prune": ("POST", "/api/v1/audit/prune", "body"),
    "audit_report": ("GET", "/api/v1/audit/report", "query"),
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
        if op == "list":
            method, path, where = "GET", f"/api/v1/{a['kind']}s", "none"
        else:
            method, path, where = ROUTES[op]
        path = path.format(**{k: v for k, v in a.items() if isinstance(v, str)})
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
