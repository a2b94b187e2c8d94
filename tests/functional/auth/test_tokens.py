"""The token flow over HTTP against a live `serve --auth`: challenges, GET and POST /token,
the JWKS, rejected tokens (tampered, expired, wrong audience, alg=none, HMAC confusion,
unknown key), scope escalation, key rotation, and the audit rows each of them leaves."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.authkit import (
    ADMIN_PASSWORD,
    TIMEOUT,
    add_user,
    audit_rows,
    b64url,
    bearer,
    cli,
    forge,
    get_manifest,
    h,
    make_image,
    push,
    server_key,
    sha,
    token,
)
from tests.support.live import LiveServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    d = tmp_path_factory.mktemp("auth-tokens") / "data"
    d.mkdir()
    s = LiveServer(d, "--auth", env={"STABLEMIRROR_ADMIN_PASSWORD": ADMIN_PASSWORD})
    s.start()
    add_user(s, "carol", "carol-pass-1", "--role", "reader", "--repos", "team/*")
    tok = bearer(s, "admin", ADMIN_PASSWORD, "repository:team/model:pull,push")
    assert push(s, tok, "team/model", "v1", make_image()).status_code == 201
    yield s
    s.stop()


def challenge(r: requests.Response) -> dict[str, str]:
    header = r.headers.get("WWW-Authenticate", "")
    assert header.startswith("Bearer "), r.headers
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_anonymous_requests_get_the_bearer_challenge(srv: LiveServer) -> None:
    r = requests.get(srv.url + "/v2/", timeout=TIMEOUT)
    assert r.status_code == 401
    c = challenge(r)
    assert c["realm"] == srv.url + "/token" and c["service"] == "stablemirror"
    r = get_manifest(srv, None, "team/model", "v1")
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert challenge(r)["scope"] == "repository:team/model:pull"
    r = requests.put(srv.url + "/v2/team/model/manifests/v9", data=b"{}", timeout=TIMEOUT)
    assert challenge(r)["scope"] == "repository:team/model:pull,push"
    r = requests.delete(srv.url + "/v2/team/model/manifests/v9", timeout=TIMEOUT)
    assert challenge(r)["scope"] == "repository:team/model:delete"
    r = requests.get(srv.url + "/v2/_catalog", timeout=TIMEOUT)
    assert challenge(r)["scope"] == "registry:catalog:*"


def test_get_token_with_basic_credentials_verifies_against_the_jwks(srv: LiveServer) -> None:
    r = token(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull,push")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert "refresh_token" not in body
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256"
    jwks = requests.get(srv.url + "/.well-known/jwks.json", timeout=TIMEOUT).json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert "d" not in key  # public half only
    claims = jwt.decode(body["token"], jwt.PyJWK.from_dict(key).key, algorithms=["ES256"],
                        audience="stablemirror", issuer="stablemirror")
    assert claims["sub"] == "admin" and claims["exp"] - claims["iat"] == 300
    assert claims["access"] == [{"type": "repository", "name": "team/model",
                                 "actions": ["pull", "push"]}]
    assert requests.get(srv.url + "/v2/", headers=h(body["token"]),
                        timeout=TIMEOUT).status_code == 200
    assert get_manifest(srv, body["token"], "team/model", "v1").status_code == 200


def test_oauth2_password_and_refresh_token_grants(srv: LiveServer) -> None:
    form = {"grant_type": "password", "username": "carol", "password": "carol-pass-1",
            "service": "stablemirror", "client_id": "test", "access_type": "offline",
            "scope": "repository:team/model:pull"}
    r = requests.post(srv.url + "/token", data=form, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["scope"] == "repository:team/model:pull" and first["refresh_token"]
    assert get_manifest(srv, first["access_token"], "team/model", "v1").status_code == 200
    r = requests.post(srv.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"],
        "service": "stablemirror", "client_id": "test",
        "scope": "repository:team/model:pull"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert get_manifest(srv, r.json()["access_token"], "team/model", "v1").status_code == 200
    # An access token is not a refresh token, and a wrong password gets nothing.
    r = requests.post(srv.url + "/token", data={
        "grant_type": "refresh_token", "refresh_token": first["access_token"],
        "service": "stablemirror"}, timeout=TIMEOUT)
    assert r.status_code == 401
    r = requests.post(srv.url + "/token", data={**form, "password": "wrong"}, timeout=TIMEOUT)
    assert r.status_code == 401
    logins = audit_rows(srv, "action = 'login' AND actor = 'carol'")
    assert {(x["result"], x["detail"]["method"]) for x in logins} >= {
        ("ok", "password"), ("ok", "refresh"), ("failed", "password")}


def test_offline_token_on_get_returns_a_refresh_token(srv: LiveServer) -> None:
    r = token(srv, "carol", "carol-pass-1", offline_token="true", client_id="t")
    assert r.status_code == 200 and r.json()["refresh_token"]


@pytest.mark.parametrize("case", ["tampered", "expired", "wrong-audience", "wrong-issuer",
                                  "alg-none", "hmac-with-public-key", "unknown-key",
                                  "refresh-as-access"])
def test_bad_tokens_are_rejected_and_audited(srv: LiveServer, case: str) -> None:
    good = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull")
    header_b64, _payload, sig = good.split(".")
    now = int(time.time())
    if case == "tampered":
        claims = jwt.decode(good, options={"verify_signature": False})
        claims["access"][0]["actions"] = ["pull", "push", "delete"]
        bad = f"{header_b64}.{b64url(json.dumps(claims).encode())}.{sig}"
    elif case == "expired":
        bad = forge(srv, iat=now - 900, nbf=now - 900, exp=now - 600)
    elif case == "wrong-audience":
        bad = forge(srv, aud="some-other-registry")
    elif case == "wrong-issuer":
        bad = forge(srv, iss="evil")
    elif case == "alg-none":
        claims = jwt.decode(good, options={"verify_signature": False})
        bad = (b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "."
               + b64url(json.dumps(claims).encode()) + ".")
    elif case == "hmac-with-public-key":
        kid, key = server_key(srv)
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        claims = jwt.decode(good, options={"verify_signature": False})
        signing = f"{b64url(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}." \
                  f"{b64url(json.dumps(claims).encode())}"
        bad = f"{signing}.{b64url(hmac.new(pub, signing.encode(), hashlib.sha256).digest())}"
    elif case == "unknown-key":
        claims = jwt.decode(good, options={"verify_signature": False})
        bad = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                         headers={"kid": jwt.get_unverified_header(good)["kid"]})
    else:
        bad = forge(srv, use="refresh")
    before = audit_rows(srv, "action = 'request.denied'")
    r = get_manifest(srv, bad, "team/model", "v1")
    assert r.status_code == 401, (case, r.status_code, r.text)
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert requests.get(srv.url + "/v2/", headers=h(bad), timeout=TIMEOUT).status_code == 401
    after = audit_rows(srv, "action = 'request.denied'")
    new = after[len(before):]
    assert new and all(x["result"] == "unauthorized" for x in new), new
    assert new[0]["detail"]["reason"]


def test_scope_escalation_gets_only_what_policy_allows(srv: LiveServer) -> None:
    r = token(srv, "carol", "carol-pass-1", "repository:team/model:pull,push,delete",
              "repository:other/x:pull", "registry:catalog:*")
    assert r.status_code == 200
    tok = r.json()["token"]
    access = jwt.decode(tok, options={"verify_signature": False})["access"]
    assert access == [{"type": "repository", "name": "team/model", "actions": ["pull"]}]
    grant = audit_rows(srv, "action = 'token.grant' AND actor = 'carol'")[-1]
    assert grant["detail"]["requested"] == ["repository:team/model:pull,push,delete",
                                            "repository:other/x:pull", "registry:catalog:*"]
    assert grant["detail"]["granted"] == ["repository:team/model:pull"]
    # What the token lacks and policy refuses: 403 DENIED, audited with the explanation.
    r = push(srv, tok, "team/model", "evil", make_image())
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
    r = requests.delete(srv.url + "/v2/team/model/manifests/v1", headers=h(tok), timeout=TIMEOUT)
    assert r.status_code == 403
    r = requests.get(srv.url + "/v2/_catalog", headers=h(tok), timeout=TIMEOUT)
    assert r.status_code == 403
    denied = audit_rows(srv, "action = 'request.denied' AND actor = 'carol'")
    assert {x["detail"]["needed"] for x in denied} >= {"repository:team/model:pull,push",
                                                       "repository:team/model:delete",
                                                       "registry:catalog:*"}
    assert all(x["result"] == "denied" for x in denied)
    assert get_manifest(srv, tok, "team/model", "v1").status_code == 200


def test_missing_scope_that_policy_allows_asks_for_a_new_token(srv: LiveServer) -> None:
    tok = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull")
    r = push(srv, tok, "team/model", "v2", make_image())
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert 'scope="repository:team/model:pull,push"' in r.headers["WWW-Authenticate"]


def test_catalog_is_for_admins(srv: LiveServer) -> None:
    tok = bearer(srv, "admin", ADMIN_PASSWORD, "registry:catalog:*")
    r = requests.get(srv.url + "/v2/_catalog", headers=h(tok), timeout=TIMEOUT)
    assert r.status_code == 200 and "team/model" in r.json()["repositories"]


def test_cross_mount_needs_pull_on_the_source(srv: LiveServer) -> None:
    add_user(srv, "dora", "dora-pass-1", "--role", "developer", "--repos", "dora/*")
    img = make_image()
    admin = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/secret:pull,push")
    assert push(srv, admin, "team/secret", "v1", img).status_code == 201
    tok = bearer(srv, "dora", "dora-pass-1", "repository:dora/x:pull,push",
                 "repository:team/secret:pull")
    url = f"{srv.url}/v2/dora/x/blobs/uploads/"
    mounted = img.blobs[1]
    for params in ({"mount": sha(mounted), "from": "team/secret"}, {"mount": sha(mounted)}):
        r = requests.post(url, params=params, headers=h(tok), timeout=TIMEOUT)
        assert r.status_code == 202, (params, r.status_code, r.text)  # an upload, not a mount
    r = requests.head(f"{srv.url}/v2/dora/x/blobs/{sha(mounted)}", headers=h(tok),
                      timeout=TIMEOUT)
    assert r.status_code == 404
    # The admin may mount from anywhere.
    admin = bearer(srv, "admin", ADMIN_PASSWORD, "repository:dora/x:pull,push",
                   "repository:team/secret:pull")
    r = requests.post(url, params={"mount": sha(mounted), "from": "team/secret"},
                      headers=h(admin), timeout=TIMEOUT)
    assert r.status_code == 201


def test_key_rotation_keeps_old_tokens_valid(srv: LiveServer) -> None:
    old = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull")
    old_kid = jwt.get_unverified_header(old)["kid"]
    out = cli(srv, "auth", "rotate-key", remote=True)
    new_kid = json.loads(out.stdout)["kid"]
    assert new_kid != old_kid
    kids = {k["kid"] for k in requests.get(srv.url + "/.well-known/jwks.json",
                                           timeout=TIMEOUT).json()["keys"]}
    assert {old_kid, new_kid} <= kids
    new = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull")
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    for tok in (old, new):
        assert get_manifest(srv, tok, "team/model", "v1").status_code == 200
    assert audit_rows(srv, "action = 'key.rotate'")[-1]["detail"]["kid"] == new_kid


def test_wrong_password_and_unknown_user_are_refused_alike(srv: LiveServer) -> None:
    for user, password in (("carol", "nope"), ("nobody", "nope")):
        r = token(srv, user, password, "repository:team/model:pull")
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    failed = audit_rows(srv, "action = 'login' AND result = 'failed'")
    assert {"carol", "nobody"} <= {x["actor"] for x in failed}


def test_without_auth_nothing_changes(server_factory: Callable[..., LiveServer]) -> None:
    plain = server_factory()
    assert requests.get(plain.url + "/v2/", timeout=TIMEOUT).status_code == 200
    assert requests.get(plain.url + "/token", timeout=TIMEOUT).status_code == 404
    assert requests.get(plain.url + "/api/v1/users", timeout=TIMEOUT).status_code == 404
    img = make_image()
    assert push(plain, "ignored", "team/model", "v1", img).status_code == 201
    assert get_manifest(plain, None, "team/model", "v1").status_code == 200
    assert audit_rows(plain) == []
