"""OIDC federation against an issuer the test runs on loopback (discovery + JWKS): its ID
tokens are accepted as passwords at the token endpoint (and by podman login); claims become
tags and groups that policies see; wrong audience, expiry, unknown issuers and keys the issuer
does not publish are refused; an issuer key rotation is picked up by refetching the JWKS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.authkit import (
    ADMIN_PASSWORD,
    OidcIssuer,
    audit_rows,
    auth_server,
    bearer,
    cli,
    get_manifest,
    make_image,
    push,
    token,
)
from tests.support.clients import Clients, KiB, OciLayout
from tests.support.live import LiveServer

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "ml-group-pulls", "Effect": "Allow", "Principal": {"group": ["ml"]},
         "Action": "registry:Pull", "Resource": "repository:models/*",
         "Condition": {"StringEquals": {"sm:PrincipalTag/department": "AI",
                                        "sm:IdentityProvider": "corp"}}},
        {"Sid": "no-secret", "Effect": "Deny", "Principal": {"user": ["corp:mallory"]},
         "Action": "registry:*", "Resource": "*"},
    ],
}


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    i = OidcIssuer()
    i.start()
    yield i
    i.stop()


@pytest.fixture
def srv(server_factory: Callable[..., LiveServer], issuer: OidcIssuer,
        tmp_path: Path) -> LiveServer:
    s = auth_server(server_factory, env=issuer.provider_env())
    tok = bearer(s, "admin", ADMIN_PASSWORD, "repository:models/llm:pull,push")
    assert push(s, tok, "models/llm", "v1", make_image()).status_code == 201
    doc = tmp_path / "oidc.json"
    doc.write_text(json.dumps(POLICY))
    cli(s, "policy", "apply", str(doc))
    return s


def granted(r: requests.Response) -> list[object]:
    assert r.status_code == 200, r.text
    return list(jwt.decode(r.json()["token"], options={"verify_signature": False})["access"])


def test_id_token_is_accepted_and_its_claims_drive_policy(srv: LiveServer,
                                                          issuer: OidcIssuer) -> None:
    good = issuer.id_token("dana", dept="AI", groups=["ml", "staff"])
    r = token(srv, "dana", good, "repository:models/llm:pull,push")
    assert granted(r) == [{"type": "repository", "name": "models/llm", "actions": ["pull"]}]
    tok = r.json()["token"]
    assert get_manifest(srv, tok, "models/llm", "v1").status_code == 200
    pull = audit_rows(srv, "action = 'manifest.pull'")[-1]
    assert pull["actor"] == "corp:dana"
    login = audit_rows(srv, "action = 'login' AND actor = 'corp:dana'")[-1]
    assert login["result"] == "ok" and login["detail"]["method"] == "oidc"
    # Another department, or no group: nothing granted. An explicit Deny wins.
    hr = issuer.id_token("erin", dept="HR", groups=["ml"])
    assert granted(token(srv, "erin", hr, "repository:models/llm:pull")) == []
    loner = issuer.id_token("finn", dept="AI")
    assert granted(token(srv, "finn", loner, "repository:models/llm:pull")) == []
    bad = issuer.id_token("mallory", dept="AI", groups=["ml"])
    assert granted(token(srv, "mallory", bad, "repository:models/llm:pull")) == []
    out = cli(srv, "policy", "test", "--user", "corp:mallory", "--tag", "department=AI",
              "--group", "ml", "--action", "registry:Pull", "--resource",
              "repository:models/llm", check=False)
    assert out.returncode == 1 and "no-secret" in out.stdout, out.stdout


@pytest.mark.parametrize("case", ["wrong-audience", "expired", "unpublished-key",
                                  "unknown-issuer"])
def test_bad_id_tokens_are_refused(srv: LiveServer, issuer: OidcIssuer, case: str) -> None:
    if case == "wrong-audience":
        bad = issuer.id_token("dana", audience="another-app", dept="AI", groups=["ml"])
    elif case == "expired":
        bad = issuer.id_token("dana", lifetime=-120, dept="AI", groups=["ml"])
    elif case == "unpublished-key":
        rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        bad = issuer.id_token("dana", key=rogue, dept="AI", groups=["ml"])
    else:
        other = OidcIssuer()  # not configured; never started: its keys are never fetched
        bad = other.id_token("dana", dept="AI", groups=["ml"])
    r = token(srv, "dana", bad, "repository:models/llm:pull")
    assert r.status_code == 401, (case, r.text)
    failed = audit_rows(srv, "action = 'login' AND result = 'failed'")
    assert failed and failed[-1]["actor"] == "dana"


def test_issuer_key_rotation_is_picked_up(srv: LiveServer, issuer: OidcIssuer) -> None:
    first = issuer.id_token("dana", dept="AI", groups=["ml"])
    assert token(srv, "dana", first).status_code == 200
    fetched = issuer.fetches
    issuer.rotate()
    # The new kid is unknown to the cache; the server refetches (rate-limited to one per
    # REFETCH_MIN_INTERVAL, so wait that out) and then accepts tokens signed with it.
    time.sleep(10.5)
    rotated = issuer.id_token("dana", dept="AI", groups=["ml"])
    r = token(srv, "dana", rotated, "repository:models/llm:pull")
    assert r.status_code == 200, r.text
    assert issuer.fetches > fetched


@pytest.mark.clients
def test_podman_login_with_an_id_token(srv: LiveServer, issuer: OidcIssuer,
                                       tmp_path: Path) -> None:
    clients = Clients(tmp_path / "clients", srv)
    try:
        layout = OciLayout(tmp_path / "layout")
        layout.tag("v1", layout.add_image([16 * KiB]).manifest)
        clients.skopeo("copy", "--dest-creds", f"admin:{ADMIN_PASSWORD}", layout.ref("v1"),
                       clients.docker_ref("models/real", "v1"))
        id_token = issuer.id_token("dana", dept="AI", groups=["ml"])
        clients.podman("login", "--tls-verify=false", "-u", "dana", "-p", id_token, srv.host)
        clients.podman("pull", "--tls-verify=false", clients.image_name("models/real", "v1"))
    finally:
        clients.close()
    assert any(x["actor"] == "corp:dana" for x in audit_rows(srv, "action = 'manifest.pull'"))
