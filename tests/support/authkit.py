"""Helpers for the access-control and audit tests (tests/functional/test_auth*.py,
test_audit*.py): an auth-enabled LiveServer, the CLI against its data dir, the token flow
over plain HTTP, a tiny image pushed with a token, JWT forgery with the server's own key,
and an OIDC issuer (discovery + JWKS) served on loopback by the test itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.live import LiveServer, free_port

ADMIN_PASSWORD = "admin-secret-1"
TIMEOUT = 30
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

ServerFactory = Callable[..., LiveServer]


def auth_server(server_factory: ServerFactory, *args: str,
                env: dict[str, str] | None = None) -> LiveServer:
    return server_factory("--auth", *args,
                          env={"STABLEMIRROR_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})})


def cli(server: LiveServer, *args: str, stdin: str | None = None, remote: bool = False,
        check: bool = True, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """`stablemirror ARGS --data-dir DIR` (or `--url URL` with the admin's password)."""
    where = ["--url", server.url] if remote else ["--data-dir", str(server.data_dir)]
    full_env = {**os.environ, "STABLEMIRROR_PASSWORD": ADMIN_PASSWORD, "COLUMNS": "200",
                **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "stablemirror", *args, *where], input=stdin,
                          capture_output=True, text=True, timeout=120, env=full_env,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"stablemirror {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def add_user(server: LiveServer, name: str, password: str, *extra: str) -> None:
    cli(server, "user", "add", name, *extra, "--password-stdin", stdin=password + "\n")


def token(server: LiveServer, user: str | None, password: str | None, *scopes: str,
          **params: str) -> requests.Response:
    return requests.get(server.url + "/token", params={"service": "stablemirror",
                                                      "scope": list(scopes), **params},
                        auth=(user, password) if user is not None else None, timeout=TIMEOUT)


def bearer(server: LiveServer, user: str | None, password: str | None, *scopes: str) -> str:
    r = token(server, user, password, *scopes)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def h(tok: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", **extra}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    manifest: bytes
    digest: str
    blobs: list[bytes]


def make_image(note: str = "") -> Image:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "note": note or os.urandom(8).hex()}).encode()
    layer = os.urandom(256)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(layer), "size": len(layer)}]}).encode()
    return Image(manifest, sha(manifest), [config, layer])


def push(server: LiveServer, tok: str, repo: str, tag: str, img: Image) -> requests.Response:
    """Monolithic blob uploads and a manifest PUT; returns the manifest PUT response."""
    for data in img.blobs:
        r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": sha(data)},
                          data=data, headers=h(tok, **{"Content-Type":
                                                       "application/octet-stream"}),
                          timeout=TIMEOUT)
        if r.status_code != 201:
            return r
    return requests.put(f"{server.url}/v2/{repo}/manifests/{tag}", data=img.manifest,
                        headers=h(tok, **{"Content-Type": OCI_MANIFEST}), timeout=TIMEOUT)


def get_manifest(server: LiveServer, tok: str | None, repo: str, ref: str) -> requests.Response:
    headers = h(tok) if tok else {}
    return requests.get(f"{server.url}/v2/{repo}/manifests/{ref}",
                        headers={**headers, "Accept": OCI_MANIFEST}, timeout=TIMEOUT)


# -- the database, white-box ---------------------------------------------------------------------
def db_rows(server: LiveServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "index.db", timeout=30) as conn:
        return list(conn.execute(sql, args).fetchall())


def audit_rows(server: LiveServer, where: str = "1=1", *args: Any) -> list[dict[str, Any]]:
    cols = ["seq", "actor", "client", "user_agent", "action", "repository", "reference",
            "digest", "result", "detail"]
    rows = db_rows(server, f"SELECT {', '.join(cols)} FROM audit_log WHERE {where} "
                   "ORDER BY seq", *args)
    return [{**dict(zip(cols, r, strict=True)), "detail": json.loads(r[-1])} for r in rows]


def server_key(server: LiveServer) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """(kid, private key) of the server's newest signing key, to forge tokens with."""
    kid, pem = db_rows(server, "SELECT kid, private_pem FROM auth_keys WHERE retired_at IS NULL "
                       "ORDER BY created_at DESC LIMIT 1")[0]
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return kid, key


def forge(server: LiveServer, **overrides: Any) -> str:
    """A token signed with the server's real key, its claims changed by `overrides`."""
    kid, key = server_key(server)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "stablemirror", "aud": "stablemirror", "sub": "admin", "iat": now, "nbf": now,
        "exp": now + 300, "jti": os.urandom(6).hex(), "use": "access", "sm:kind": "user",
        "sm:name": "admin", "sm:idp": "local", "sm:tags": {}, "sm:groups": [],
        "access": [{"type": "repository", "name": "team/model", "actions": ["pull"]}]}
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- an OIDC issuer on loopback -----------------------------------------------------------------
class OidcIssuer:
    """Discovery document + JWKS over HTTP on 127.0.0.1, and ID tokens signed with its key."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "k1"
        self.fetches = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _jwk(self) -> dict[str, Any]:
        doc = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**doc, "kid": self.kid, "use": "sig", "alg": "RS256"}

    async def _discovery(self, _request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "jwks_uri": self.url + "/jwks",
                                  "id_token_signing_alg_values_supported": ["RS256"]})

    async def _jwks(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": [self._jwk()]})

    def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app)
        self._thread.start()

        async def up() -> None:
            assert self._runner is not None
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def rotate(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"k{int(self.kid[1:]) + 1}"

    def id_token(self, username: str, audience: str = "stablemirror-registry",
                 lifetime: int = 300, key: rsa.RSAPrivateKey | None = None,
                 **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": audience, "sub": f"sub-{username}",
                "preferred_username": username, "iat": now, "exp": now + lifetime, **claims}
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def provider_env(self, **extra: Any) -> dict[str, str]:
        provider = {"name": "corp", "issuer": self.url, "audience": "stablemirror-registry",
                    "tag_claims": {"department": "dept"}, **extra}
        return {"STABLEMIRROR_AUTH__OIDC": json.dumps([provider])}
