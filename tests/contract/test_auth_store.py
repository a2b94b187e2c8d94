"""Accounts, bindings, policies and signing keys on both index backends: every change bumps
the shared version and is audited in its own transaction; keys rotate without orphaning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.audit.log import AuditLog, AuditQuery
from stablemirror.auth import keys
from stablemirror.auth.admin import AuthAdmin, Invalid, NotFound
from stablemirror.auth.keys import KeyRing
from stablemirror.auth.passwords import Passwords
from stablemirror.auth.policy import PULL, PUSH
from stablemirror.auth.service import AuthService, LoginFailed, PolicyCache
from stablemirror.auth.store import AuthStore, Conflict
from stablemirror.auth.tokens import Access, TokenInvalid, TokenService
from stablemirror.index.db import Database
from stablemirror.registry.protocol import RequestContext
from tests.contract.test_audit_chain import url  # noqa: F401 - the backend fixture

CTX = RequestContext(actor="tester", client="127.0.0.1")


@pytest.fixture
async def parts(url: str, tmp_path: Path  # noqa: F811
                ) -> AsyncIterator[tuple[AuthAdmin, AuthService, AuditLog]]:
    db = Database(url)
    store = AuthStore(db)
    passwords = Passwords()
    cache = PolicyCache(store, ["public/*"])
    admin = AuthAdmin(db, store, passwords, cache, key_grace_seconds=60)
    ring = KeyRing(db)
    await db.write(lambda c: keys.ensure(c, None, 60))
    await ring.load()
    service = AuthService(store, cache, TokenService(ring, "sm", "sm", 300, 3600), passwords,
                          None)
    yield admin, service, AuditLog(db, tmp_path / "k.key")
    await db.close()


async def test_accounts_roles_policies_and_their_audit(
        parts: tuple[AuthAdmin, AuthService, AuditLog]) -> None:
    admin, service, audit = parts
    await admin.add_user(CTX, "alice", "alice-pass-1", {"department": "AI"}, ["ml"],
                         [("reader", "team/*")])
    with pytest.raises(Conflict):
        await admin.add_user(CTX, "alice", "another-pass", {}, [], [])
    with pytest.raises(Invalid):
        await admin.add_user(CTX, "Bad Name", "whatever-1", {}, [], [])
    who = (await service.login("alice", "alice-pass-1")).principal
    assert who.tags == {"department": "AI"} and who.groups == ("ml",)
    with pytest.raises(LoginFailed):
        await service.login("alice", "wrong")
    assert (await service.decide(who, PULL, "repository:team/x")).allowed
    assert not (await service.decide(who, PUSH, "repository:team/x")).allowed
    await admin.apply_policy(CTX, "ml", {"Statement": [
        {"Effect": "Allow", "Principal": {"group": ["ml"]}, "Action": "registry:Push",
         "Resource": "repository:team/*"}]})
    assert (await service.decide(who, PUSH, "repository:team/x")).allowed  # new version seen
    assert not await admin.apply_policy(CTX, "ml", {"Statement": [  # replaced, audited too
        {"Effect": "Allow", "Principal": {"group": ["ml"]}, "Action": "registry:Push",
         "Resource": "repository:team/*"}]})
    granted = await service.grant(who, [Access("repository", "team/x", ("pull", "push",
                                                                         "delete"))], "", "")
    assert granted == [Access("repository", "team/x", ("pull", "push"))]
    await admin.delete_policy(CTX, "ml")
    assert not (await service.decide(who, PUSH, "repository:team/x")).allowed
    with pytest.raises(NotFound):
        await admin.delete_policy(CTX, "ml")

    _account, secret = await admin.create_robot(CTX, "ci", [("developer", "ci/*")],
                                               time.time() + 3600)
    robot = (await service.login("robot+ci", secret)).principal
    token = service.tokens.issue_access(robot, [Access("repository", "ci/a", ("push",))])
    assert (await service.bearer(token)).principal.id == "robot+ci"
    await admin.revoke_robot(CTX, "ci")
    with pytest.raises(TokenInvalid, match="revoked"):
        await service.bearer(token)
    with pytest.raises(LoginFailed):
        await service.login("robot+ci", secret)

    actions = [r.event.action for r in await audit.query(AuditQuery())]
    assert actions == ["user.add", "policy.apply", "policy.apply", "policy.delete",
                       "robot.create", "robot.revoke"]
    assert all(r.event.actor == "tester" for r in await audit.query(AuditQuery()))
    assert (await audit.verify()).ok


async def test_bootstrap_admin_is_idempotent_under_concurrency(
        parts: tuple[AuthAdmin, AuthService, AuditLog]) -> None:
    admin, service, _audit = parts
    created = await asyncio.gather(*(admin.bootstrap_admin("admin-pass-1") for _ in range(4)))
    assert sorted(created) == [False, False, False, True]
    who = (await service.login("admin", "admin-pass-1")).principal
    assert (await service.decide(who, "registry:Admin", "registry")).allowed


async def test_key_rotation_retires_only_after_the_grace(
        parts: tuple[AuthAdmin, AuthService, AuditLog]) -> None:
    admin, service, _audit = parts
    ring = service.tokens.keys
    first = ring.active.kid
    old_token = service.tokens.issue_access(service.anonymous().principal, [])
    second = await admin.rotate_key(CTX)
    await ring.load()
    assert ring.active.kid == second != first
    assert {k["kid"] for k in ring.jwks()["keys"]} == {first, second}
    assert (await service.tokens.verify(old_token)).principal.kind == "anonymous"
    # Much later (past the grace), the next rotation retires the first key.
    await admin.db.write(lambda c: keys.rotate(c, 60, now=time.time() + 3600))
    await ring.load()
    assert first not in {k["kid"] for k in ring.jwks()["keys"]}
    with pytest.raises(TokenInvalid):
        await service.tokens.verify(old_token)
