"""Administration through the CLI (`--data-dir` and `--url`) and the admin API: users,
robots, role bindings, policy validation, who may administer, expiry, and changes made
while a multi-worker server runs reaching every worker."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import jwt
import requests

from tests.support.authkit import (
    ADMIN_PASSWORD,
    TIMEOUT,
    add_user,
    audit_rows,
    auth_server,
    bearer,
    cli,
    db_rows,
    get_manifest,
    make_image,
    push,
    token,
)
from tests.support.live import LiveServer

ServerFactory = Callable[..., LiveServer]


def test_admin_api_and_cli(server_factory: ServerFactory) -> None:
    srv = auth_server(server_factory)
    api = srv.url + "/api/v1"
    admin = ("admin", ADMIN_PASSWORD)
    # Only admins administer; others are told why.
    assert requests.get(api + "/users", timeout=TIMEOUT).status_code == 401
    add_user(srv, "carol", "carol-pass-1", "--role", "reader", "--repos", "team/*",
             "--group", "ml")
    r = requests.get(api + "/users", auth=("carol", "carol-pass-1"), timeout=TIMEOUT)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    refused = audit_rows(srv, "action = 'request.denied' AND actor = 'carol'")
    assert refused and refused[-1]["detail"]["path"] == "/api/v1/users"
    users = requests.get(api + "/users", auth=admin, timeout=TIMEOUT).json()
    assert {u["name"] for u in users} == {"admin", "carol"}
    assert next(u for u in users if u["name"] == "carol")["groups"] == ["ml"]
    # Bearer tokens work for the admin API as well.
    tok = bearer(srv, "admin", ADMIN_PASSWORD)
    assert requests.get(api + "/robots", headers={"Authorization": f"Bearer {tok}"},
                        timeout=TIMEOUT).status_code == 200

    # Errors name the field.
    bad = requests.put(api + "/policies/bad", auth=admin, timeout=TIMEOUT, json={
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "registry:Fly",
                                                "Resource": "*"}]})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["detail"]["field"] == "policy.Statement[0].Action"
    dup = cli(srv, "user", "add", "carol", "--password-stdin", stdin="another-pass\n",
              remote=True, check=False)
    assert dup.returncode == 2 and "already exists" in dup.stdout + dup.stderr
    short = cli(srv, "user", "add", "dan", "--password-stdin", stdin="short\n", check=False)
    assert short.returncode == 2 and "password" in short.stdout

    # A group binding grants to every member; unbinding takes it away again.
    cli(srv, "role", "bind", "--group", "ml", "--role", "developer", "--repos", "ml/*",
        remote=True)
    assert [b for b in json.loads(cli(srv, "role", "list").stdout)
            if b["principal"] == "ml"] == [{"principal_kind": "group", "principal": "ml",
                                            "role": "developer", "repositories": "ml/*"}]
    r = token(srv, "carol", "carol-pass-1", "repository:ml/x:pull,push")
    assert r.json()["scope"] == "repository:ml/x:pull,push"
    cli(srv, "role", "bind", "--group", "ml", "--role", "developer", "--repos", "ml/*",
        "--remove")
    r = token(srv, "carol", "carol-pass-1", "repository:ml/x:pull,push")
    assert r.json()["scope"] == ""

    # Disabling a user ends its access at once, like revoking a robot.
    carol = bearer(srv, "carol", "carol-pass-1", "repository:team/m:pull")
    cli(srv, "user", "set", "carol", "--disable", remote=True)
    assert get_manifest(srv, carol, "team/m", "v1").status_code == 401
    assert token(srv, "carol", "carol-pass-1").status_code == 401
    cli(srv, "user", "set", "carol", "--enable", "--tag", "department=AI")
    assert token(srv, "carol", "carol-pass-1").status_code == 200
    cli(srv, "user", "set", "carol", "--password-stdin", stdin="carol-pass-2\n")
    assert token(srv, "carol", "carol-pass-1").status_code == 401
    assert token(srv, "carol", "carol-pass-2").status_code == 200
    cli(srv, "user", "delete", "carol", remote=True)
    assert token(srv, "carol", "carol-pass-2").status_code == 401

    cli_actor = "cli:" + (os.environ.get("USER") or "unknown")
    changes = [x["action"] for x in audit_rows(srv, "actor IN ('admin', ?)", cli_actor)]
    for action in ("user.add", "role.bind", "role.unbind", "user.update", "user.delete"):
        assert action in changes, (action, changes)
    # Nothing secret is recorded: no password hash in the audit trail.
    assert not db_rows(srv, "SELECT seq FROM audit_log WHERE detail LIKE '%argon2%' "
                       "OR detail LIKE '%carol-pass%'")


def test_robot_expiry_and_listing(server_factory: ServerFactory) -> None:
    srv = auth_server(server_factory)
    out = json.loads(cli(srv, "robot", "create", "nightly", "--role", "reader", "--repos",
                         "team/*", "--expires-days", str(8 / 86400), remote=True).stdout)
    assert out["expires_at"] > time.time()
    r = token(srv, out["username"], out["secret"], "repository:team/m:pull")
    assert r.status_code == 200
    tok = r.json()["token"]
    listed = json.loads(cli(srv, "robot", "list").stdout)
    assert [x["name"] for x in listed] == ["nightly"] and "secret" not in listed[0]
    time.sleep(max(0.0, out["expires_at"] - time.time()) + 0.5)
    assert token(srv, out["username"], out["secret"]).status_code == 401
    assert get_manifest(srv, tok, "team/m", "v1").status_code == 401
    missing = cli(srv, "robot", "create", "noscope", check=False)
    assert missing.returncode == 2 and "role" in missing.stdout


def test_changes_reach_every_worker(server_factory: ServerFactory) -> None:
    srv = server_factory("--auth", workers=2,
                         env={"STABLEMIRROR_ADMIN_PASSWORD": ADMIN_PASSWORD})
    admin = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/m:pull,push")
    assert push(srv, admin, "team/m", "v1", make_image()).status_code == 201
    add_user(srv, "erin", "erin-pass-1")
    scope = "repository:team/m:pull"
    # Many requests spread over both workers: none grants before the binding exists...
    assert all(token(srv, "erin", "erin-pass-1", scope).json()["scope"] == ""
               for _ in range(6))
    cli(srv, "role", "bind", "--user", "erin", "--role", "reader", "--repos", "team/*")
    # ...and every one does after it (each worker notices the new auth_state version).
    assert all(token(srv, "erin", "erin-pass-1", scope).json()["scope"] == scope
               for _ in range(6))
    # Rotating the key in-process: workers pick up the new key and verify its tokens.
    kid = json.loads(cli(srv, "auth", "rotate-key").stdout)["kid"]
    deadline = time.monotonic() + 20
    tok = ""
    while time.monotonic() < deadline:
        tok = bearer(srv, "erin", "erin-pass-1", scope)
        if jwt.get_unverified_header(tok)["kid"] == kid:
            break
        time.sleep(0.5)
    assert all(get_manifest(srv, tok, "team/m", "v1").status_code == 200 for _ in range(6))
    assert cli(srv, "audit", "verify").returncode == 0
