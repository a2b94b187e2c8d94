"""The registry client of `sign` / `verify`: references, the Docker token flow, verified
reads; and the pure parts of policies (pattern choice, artifact exemption)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from stablemirror.client.auth import parse_challenge
from stablemirror.client.reference import base_url, is_loopback, parse_image_reference
from stablemirror.client.registry import RegistryClient
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import Denied, DigestInvalid, NameInvalid, Unauthorized
from stablemirror.trust.enforce import is_supply_chain_artifact
from stablemirror.trust.keys import generate_key_pair, load_public_key
from stablemirror.trust.policy import TrustPolicy, role_key, select_policy

DIGEST = "sha256:" + "ab" * 32


def test_parse_references() -> None:
    r = parse_image_reference("127.0.0.1:5000/models/llama:v1")
    assert (r.registry, r.repository, r.tag, r.digest) == ("127.0.0.1:5000", "models/llama",
                                                          "v1", None)
    assert r.name == "127.0.0.1:5000/models/llama" and r.reference == "v1"
    r = parse_image_reference(f"localhost/a/b@{DIGEST}")
    assert r.repository == "a/b" and str(r.digest) == DIGEST and r.reference == DIGEST
    r = parse_image_reference("registry.example:443/x")
    assert r.reference == "latest" and str(r) == "registry.example:443/x:latest"
    for bad in ("llama", "127.0.0.1:5000/", "127.0.0.1:5000/UPPER:v1", "r/x:bad tag"):
        with pytest.raises((NameInvalid, DigestInvalid)):
            parse_image_reference(bad)


def test_plain_http_only_for_loopback_or_insecure() -> None:
    for host in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"):
        assert is_loopback(host) and base_url(host).startswith("http://"), host
    for host in ("registry.example", "10.0.0.1:5000", "192.168.1.2"):
        assert not is_loopback(host)
        assert base_url(host) == f"https://{host}"
        assert base_url(host, insecure=True) == f"http://{host}"


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="http://h/token",service="registry",scope="repository:a/b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "http://h/token", "service": "registry",
                      "scope": "repository:a/b:pull"}


class TokenRegistry:
    """A registry that wants anonymous bearer tokens, like Docker Hub."""

    def __init__(self) -> None:
        self.manifest = json.dumps({"schemaVersion": 2, "layers": []}).encode()
        self.digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        self.token_requests: list[dict[str, str]] = []
        self.blobs: dict[str, bytes] = {}
        self.lie = False
        self.refuse_tokens = False
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_route("*", "/v2/{tail:.*}", self.v2)
        return app

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(dict(request.query))
        if self.refuse_tokens:
            return web.Response(status=403)
        return web.json_response({"token": "t0k"})

    async def v2(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer t0k":
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="{self.url}/token",service="test",'
                                    'scope="repository:a/b:pull"'})
        tail = request.match_info["tail"]
        if tail.startswith("a/b/manifests/"):
            if request.method == "GET" and tail.endswith("/denied"):
                body = {"errors": [{"code": "DENIED", "message": "no", "detail": {}}]}
                return web.json_response(body, status=403)
            body = self.manifest + (b" " if self.lie else b"")
            return web.Response(body=body, headers={
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": self.digest})
        if tail.startswith("a/b/blobs/sha256:"):
            data = self.blobs.get(tail.rsplit("/", 1)[1])
            if data is None:
                return web.Response(status=404)
            return web.Response(body=data)
        return web.Response(status=404)


@pytest.fixture
async def token_registry() -> AsyncIterator[TokenRegistry]:
    fake = TokenRegistry()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


async def test_token_flow_and_verified_reads(token_registry: TokenRegistry) -> None:
    host = token_registry.url.removeprefix("http://")
    async with RegistryClient(host) as client:
        found = await client.get_manifest("a/b", "v1")
        assert str(found.digest) == token_registry.digest
        assert await client.resolve("a/b", "v1") == Digest.parse(token_registry.digest)
        assert token_registry.token_requests[0] == {"scope": "repository:a/b:pull",
                                                    "service": "test"}
        # One token, reused.
        await client.get_manifest("a/b", token_registry.digest)
        assert len(token_registry.token_requests) == 1
        with pytest.raises(Denied):
            await client.get_manifest("a/b", "denied")
        token_registry.blobs[str(Digest.of(b"payload"))] = b"tampered"
        with pytest.raises(DigestInvalid):
            await client.get_blob("a/b", Digest.of(b"payload"), 1024)
        token_registry.lie = True  # bytes that do not hash to the digest asked for
        with pytest.raises(DigestInvalid):
            await client.get_manifest("a/b", token_registry.digest)


async def test_token_refused_is_unauthorized(token_registry: TokenRegistry) -> None:
    host = token_registry.url.removeprefix("http://")
    token_registry.refuse_tokens = True
    async with RegistryClient(host) as client:
        with pytest.raises(Unauthorized):
            await client.get_manifest("a/b", "v1")


# -- policies (pure) ----------------------------------------------------------------------------
def _policy(pattern: str) -> TrustPolicy:
    key = role_key("developer", generate_key_pair(b"").public_pem, "k.pub")
    return TrustPolicy(pattern, "enforce", (key,))


def test_most_specific_pattern_wins() -> None:
    policies = [_policy("*"), _policy("models/*"), _policy("models/llama"),
                _policy("models/l*")]
    assert select_policy(policies, "models/llama").pattern == "models/llama"  # type: ignore[union-attr]
    assert select_policy(policies, "models/lora").pattern == "models/l*"  # type: ignore[union-attr]
    assert select_policy(policies, "models/x/y").pattern == "models/*"  # type: ignore[union-attr]
    assert select_policy(policies, "other").pattern == "*"  # type: ignore[union-attr]
    assert select_policy(policies[1:], "other") is None


def test_fingerprint_follows_keys() -> None:
    a, b = _policy("x"), _policy("x")
    assert a.fingerprint != b.fingerprint
    assert a.roles == ["developer"]
    with pytest.raises(ValueError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_supply_chain_artifacts_are_recognised_by_content() -> None:
    sig = {"schemaVersion": 2, "config": {}, "layers": [
        {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json"}]}
    image = {"schemaVersion": 2, "config": {}, "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}]}
    mixed = {"schemaVersion": 2, "config": {}, "layers": [*sig["layers"], *image["layers"]]}
    sbom = {"schemaVersion": 2, "artifactType": "application/spdx+json",
            "subject": {"digest": DIGEST}, "layers": [{"mediaType": "application/spdx+json"}]}
    model = {"schemaVersion": 2, "subject": {"digest": DIGEST},
             "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw"}]}
    annotation_only = {"schemaVersion": 2, "artifactType": "application/vnd.dev.sigstore.x",
                       "subject": {"digest": DIGEST}, "layers": []}
    fallback = {"schemaVersion": 2, "manifests": [
        {"artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}]}
    platforms = {"schemaVersion": 2, "manifests": [{"platform": {"os": "linux"}}]}
    for doc, expected in ((sig, True), (image, False), (mixed, False), (sbom, True),
                          (model, False), (annotation_only, True), (fallback, True),
                          (platforms, False)):
        assert is_supply_chain_artifact(json.dumps(doc).encode()) is expected, doc
    assert not is_supply_chain_artifact(b"not json")
