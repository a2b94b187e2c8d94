"""Access control with real clients (podman, skopeo) against `serve --auth`.

The first test is the issue's acceptance scenario end to end: anonymous /v2/ gets the
Bearer challenge; admin pushes with skopeo; a user tagged department=AI pulls team/* under
the issue's policy but cannot push; a user tagged otherwise is denied; `audit verify` passes;
`audit report` lists the pulls with user and digest; editing a record breaks verification.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.authkit import (
    ADMIN_PASSWORD,
    TIMEOUT,
    add_user,
    audit_rows,
    auth_server,
    cli,
    db_rows,
    get_manifest,
    h,
    token,
)
from tests.support.clients import Clients, KiB, OciLayout
from tests.support.live import LiveServer

pytestmark = pytest.mark.clients

ISSUE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{
        "Sid": "ai-pulls-team", "Effect": "Allow", "Principal": {"user": ["alice", "bob"]},
        "Action": ["registry:Pull"], "Resource": ["repository:team/*"],
        "Condition": {"StringEquals": {"sm:PrincipalTag/department": "AI"}},
    }],
}


@pytest.fixture
def persona(tmp_path: Path) -> Iterator[Callable[[str, LiveServer], Clients]]:
    """Clients with a private configuration (auth file, storage) per person."""
    made: list[Clients] = []

    def make(name: str, registry: LiveServer) -> Clients:
        c = Clients(tmp_path / f"clients-{name}", registry)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def layout_with_image(root: Path) -> tuple[OciLayout, str]:
    layout = OciLayout(root)
    img = layout.add_image([64 * KiB])
    layout.tag("v1", img.manifest)
    return layout, img.manifest.digest


def test_issue_acceptance_scenario(server_factory: Callable[..., LiveServer], tmp_path: Path,
                                   persona: Callable[[str, LiveServer], Clients]) -> None:
    srv = auth_server(server_factory)
    r = requests.get(srv.url + "/v2/", timeout=TIMEOUT)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer realm=")

    admin = persona("admin", srv)
    layout, digest = layout_with_image(tmp_path / "layout")
    admin.skopeo("copy", "--dest-creds", f"admin:{ADMIN_PASSWORD}", layout.ref("v1"),
                 admin.docker_ref("team/model", "v1"))

    add_user(srv, "alice", "alice-pass-1", "--tag", "department=AI")  # in-process
    cli(srv, "user", "add", "bob", "--tag", "department=HR", "--password-stdin",
        stdin="bob-pass-12\n", remote=True)  # through the admin API
    policy = tmp_path / "team-ai.json"
    policy.write_text(json.dumps(ISSUE_POLICY))
    cli(srv, "policy", "apply", str(policy))
    out = cli(srv, "policy", "test", "--user", "alice", "--action", "registry:Pull",
              "--resource", "repository:team/model")
    assert "ALLOW" in out.stdout and "policy:team-ai statement 'ai-pulls-team'" in out.stdout
    out = cli(srv, "policy", "test", "--user", "bob", "--action", "registry:Pull",
              "--resource", "repository:team/model", remote=True, check=False)
    assert out.returncode == 1, out
    assert "DENY" in out.stdout and "sm:PrincipalTag/department" in out.stdout

    alice = persona("alice", srv)
    alice.podman("login", "--tls-verify=false", "-u", "alice", "-p", "alice-pass-1", srv.host)
    name = alice.image_name("team/model", "v1")
    alice.podman("pull", "--tls-verify=false", name)
    alice.podman("tag", name, alice.image_name("team/model", "v2"))
    pushed = alice.podman("push", "--tls-verify=false", alice.image_name("team/model", "v2"),
                          check=False)
    assert pushed.returncode != 0, alice.fail("alice could push")
    assert "denied" in pushed.stderr.lower(), pushed.stderr

    bob = persona("bob", srv)
    denied = bob.skopeo("inspect", "--creds", "bob:bob-pass-12", "--raw",
                        bob.docker_ref("team/model", "v1"), check=False)
    assert denied.returncode != 0 and "denied" in denied.stderr.lower(), denied.stderr

    verify = cli(srv, "audit", "verify")
    assert verify.stdout.startswith("OK"), verify.stdout
    report = json.loads(cli(srv, "audit", "report", "--format", "json", "--repo", "team/*",
                            "--since", "2020-01-01").stdout)
    pulls = [x for x in report["records"] if x["action"] == "manifest.pull"]
    assert {(x["actor"], x["digest"]) for x in pulls} >= {("alice", digest)}, pulls
    version = next(v for v in report["pulls_by_version"] if v["digest"] == digest)
    assert version["repository"] == "team/model" and "alice" in version["users"]
    assert any(u["actor"] == "alice" and u["pulls"] >= 1 for u in report["pulls_by_user"])
    assert any(x["actor"] == "bob" and x["action"] == "request.denied"
               for x in report["records"])
    pushes = [x for x in report["records"] if x["action"] == "manifest.push"]
    assert pushes and pushes[0]["actor"] == "admin" and pushes[0]["digest"] == digest
    csv = cli(srv, "audit", "report", "--format", "csv", "--user", "alice").stdout
    assert "manifest.pull" in csv and digest in csv and "bob" not in csv
    table = cli(srv, "audit", "report", "--format", "table", remote=True).stdout
    assert "pulls by model version" in table and "alice" in table

    seq = db_rows(srv, "SELECT seq FROM audit_log WHERE actor = 'alice' AND "
                  "action = 'manifest.pull' ORDER BY seq LIMIT 1")[0][0]
    db_rows(srv, "UPDATE audit_log SET digest = 'sha256:' || printf('%064d', 0) "
            "WHERE seq = ?", seq)
    broken = cli(srv, "audit", "verify", check=False)
    assert broken.returncode == 1
    assert re.search(rf"BROKEN at record {seq}\b", broken.stdout), broken.stdout
    assert not json.loads(cli(srv, "audit", "verify", "--json", remote=True,
                              check=False).stdout)["ok"]


def test_reader_cannot_push_and_a_robot_revoked_mid_session_loses_access(
        server_factory: Callable[..., LiveServer], tmp_path: Path,
        persona: Callable[[str, LiveServer], Clients]) -> None:
    srv = auth_server(server_factory)
    add_user(srv, "carol", "carol-pass-1", "--role", "reader", "--repos", "team/*")
    created = json.loads(cli(srv, "robot", "create", "ci", "--role", "developer", "--repos",
                             "team/*", "--expires-days", "30").stdout)
    login, secret = created["username"], created["secret"]
    assert login == "robot+ci" and len(secret) >= 40

    ci = persona("ci", srv)
    layout, digest = layout_with_image(tmp_path / "layout")
    ci.skopeo("copy", "--dest-creds", f"{login}:{secret}", layout.ref("v1"),
              ci.docker_ref("team/model", "v1"))

    carol = persona("carol", srv)
    carol.skopeo("inspect", "--creds", "carol:carol-pass-1", "--raw",
                 carol.docker_ref("team/model", "v1"))
    carol.skopeo("copy", "--src-creds", "carol:carol-pass-1",
                 carol.docker_ref("team/model", "v1"), f"oci:{tmp_path / 'carol-out'}:v1")
    assert (tmp_path / "carol-out" / "index.json").exists()
    pushed = carol.skopeo("copy", "--dest-creds", "carol:carol-pass-1", layout.ref("v1"),
                          carol.docker_ref("team/model", "v2"), check=False)
    assert pushed.returncode != 0 and "denied" in pushed.stderr.lower(), pushed.stderr

    # Mid-session: the robot holds a valid token, then is revoked.
    r = token(srv, login, secret, "repository:team/model:pull")
    assert r.status_code == 200
    tok = r.json()["token"]
    assert get_manifest(srv, tok, "team/model", "v1").status_code == 200
    cli(srv, "robot", "revoke", "ci", remote=True)
    r = get_manifest(srv, tok, "team/model", "v1")
    assert r.status_code == 401 and "revoked" in r.text, r.text
    assert requests.get(srv.url + "/v2/", headers=h(tok), timeout=TIMEOUT).status_code == 401
    again = ci.skopeo("inspect", "--creds", f"{login}:{secret}", "--raw",
                      ci.docker_ref("team/model", "v1"), check=False)
    assert again.returncode != 0
    assert token(srv, login, secret).status_code == 401

    rows = audit_rows(srv)
    by = {(x["actor"], x["action"], x["result"]) for x in rows}
    assert ("robot+ci", "manifest.push", "ok") in by
    assert ("robot+ci", "login", "ok") in by
    assert ("robot+ci", "login", "failed") in by  # after the revocation
    assert ("carol", "request.denied", "denied") in by
    assert any(x["action"] == "robot.revoke" and x["actor"] == "admin" for x in rows)
    assert any(x["action"] == "request.denied" and "revoked" in x["detail"]["reason"]
               for x in rows)
    push_row = next(x for x in rows if x["action"] == "manifest.push")
    assert push_row["digest"] == digest and push_row["user_agent"].startswith("skopeo")
    assert cli(srv, "audit", "verify").returncode == 0


def test_public_namespaces_allow_anonymous_pull(
        server_factory: Callable[..., LiveServer], tmp_path: Path,
        persona: Callable[[str, LiveServer], Clients]) -> None:
    srv = auth_server(server_factory, env={
        "STABLEMIRROR_AUTH__PUBLIC_REPOSITORIES": '["public/*"]'})
    admin = persona("admin", srv)
    layout, _digest = layout_with_image(tmp_path / "layout")
    for repo in ("public/base", "private/base"):
        admin.skopeo("copy", "--dest-creds", f"admin:{ADMIN_PASSWORD}", layout.ref("v1"),
                     admin.docker_ref(repo, "v1"))
    anon = persona("anon", srv)
    anon.podman("pull", "--tls-verify=false", anon.image_name("public/base", "v1"))
    refused = anon.skopeo("inspect", "--no-creds", "--raw",
                          anon.docker_ref("private/base", "v1"), check=False)
    assert refused.returncode != 0
    pushed = anon.skopeo("copy", "--dest-no-creds", layout.ref("v1"),
                         anon.docker_ref("public/base", "v2"), check=False)
    assert pushed.returncode != 0
    # Plain HTTP without any token works for public pulls too.
    assert get_manifest(srv, None, "public/base", "v1").status_code == 200
    assert get_manifest(srv, None, "private/base", "v1").status_code == 401
    pulls = audit_rows(srv, "action = 'manifest.pull' AND repository = 'public/base'")
    assert pulls and all(x["actor"] == "" for x in pulls)
