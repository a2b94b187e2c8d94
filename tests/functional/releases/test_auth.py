"""Release channels with --auth: `registry:Promote` decides who moves channels (admins and
maintainers by role, anyone a policy grants it to per repository), history and audit name
who did what, and each channel pull is audited with the version it resolved to."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.authkit import (
    ADMIN_PASSWORD,
    OCI_MANIFEST,
    TIMEOUT,
    add_user,
    audit_rows,
    auth_server,
    bearer,
    cli,
    h,
    make_image,
    push,
)
from tests.support.live import LiveServer
from tests.support.mirror_support import error_codes
from tests.support.release_support import api, ok, release_cli

ServerFactory = Callable[..., LiveServer]
REPO = "team/model"


def test_promote_needs_the_promote_action_and_everything_is_on_the_record(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    srv = auth_server(server_factory)
    tok = bearer(srv, "admin", ADMIN_PASSWORD, f"repository:{REPO}:pull,push",
                 "repository:team/other:pull,push")
    images = {v: make_image(v) for v in ("1.0.0", "1.1.0", "1.2.0-beta.1")}
    for version, img in images.items():
        assert push(srv, tok, REPO, version, img).status_code == 201
    assert push(srv, tok, "team/other", "1.0.0", make_image("other")).status_code == 201
    add_user(srv, "dev", "dev-pass-1", "--role", "developer", "--repos", "team/*")
    add_user(srv, "lead", "lead-pass-1", "--role", "maintainer", "--repos", "team/*")
    add_user(srv, "ops", "ops-pass-1")
    policy = tmp_path / "ops-promote.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"user": ["ops"]},
        "Action": ["registry:Promote", "registry:Pull"], "Resource": f"repository:{REPO}"}]}))
    cli(srv, "policy", "apply", str(policy))
    body = {"version": "1.0.0", "channel": "stable"}

    anonymous = api(srv, REPO, "promote", body)
    assert anonymous.status_code == 401 and error_codes(anonymous) == ["UNAUTHORIZED"]
    denied = api(srv, REPO, "promote", body, auth=("dev", "dev-pass-1"))
    assert denied.status_code == 403 and error_codes(denied) == ["DENIED"], denied.text
    assert api(srv, "team/other", "promote", body, auth=("ops", "ops-pass-1")
               ).status_code == 403  # the policy grants Promote on team/model only
    assert ok(api(srv, REPO, "history", auth=("dev", "dev-pass-1"))) == []  # reads: Pull

    ok(api(srv, REPO, "promote", body, auth=("lead", "lead-pass-1")))
    ok(api(srv, REPO, "split", {"channel": "stable", "weights": {"1.0.0": 90, "1.1.0": 10},
                                "reason": "canary"}, auth=("ops", "ops-pass-1")))
    ok(api(srv, REPO, "promote", {"version": "1.2.0-beta.1", "channel": "stable",
                                  "force": True, "reason": "emergency"},
           auth=("admin", ADMIN_PASSWORD)))
    release_cli(srv, "rollback", f"{srv.host}/{REPO}", "--channel", "stable",
                "--username", "lead", password="lead-pass-1")

    history = ok(api(srv, REPO, "history", auth=("lead", "lead-pass-1")))
    assert [(h["actor"], h["action"], h["forced"]) for h in history] == [
        ("lead", "promote", False), ("ops", "split", False), ("admin", "promote", True),
        ("lead", "rollback", False)]
    moves = audit_rows(srv, "action LIKE 'channel.%' AND repository = ?", REPO)
    assert [(m["actor"], m["action"], m["reference"]) for m in moves] == [
        ("lead", "channel.promote", "stable"), ("ops", "channel.split", "stable"),
        ("admin", "channel.promote", "stable"), ("lead", "channel.rollback", "stable")]
    assert moves[2]["detail"]["forced"] is True and moves[2]["detail"]["reason"] == "emergency"
    assert [e["version"] for e in moves[3]["detail"]["to"]] == ["1.0.0", "1.1.0"]
    denials = audit_rows(srv, "action = 'request.denied' AND actor = 'dev'")
    assert denials and "registry:Promote" in denials[-1]["detail"]["reason"]

    # a pull of the channel is audited with the version it resolved to
    dev = bearer(srv, "dev", "dev-pass-1", f"repository:{REPO}:pull")
    r = requests.get(f"{srv.url}/v2/{REPO}/manifests/stable",
                     headers={**h(dev), "Accept": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 200
    version = next(v for v, img in images.items() if img.digest ==
                   r.headers["Docker-Content-Digest"])
    pulls = audit_rows(srv, "action = 'manifest.pull' AND reference = 'stable'")
    assert [(p["actor"], p["detail"]["version"], p["digest"]) for p in pulls] == [
        ("dev", version, r.headers["Docker-Content-Digest"])]
    assert pulls[0]["detail"]["identity"] == "dev"  # the subject is the identity
