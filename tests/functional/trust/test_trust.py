"""Dual-signature trust policies on a live server: cosign-format signatures made and
checked by the CLI, enforced on manifest GETs (hosted namespaces; test_trust_mirror.py
covers mirrored ones)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from stablemirror.oci.digest import Digest
from stablemirror.trust import cosign, keys
from tests.support.clients import Clients
from tests.support.live import LiveServer
from tests.support.trust_support import (
    OCI_INDEX,
    PASSWORD,
    Image,
    cli,
    error,
    generate_keys,
    get_manifest,
    metric,
    push_blob,
    push_image,
    push_manifest,
    ref,
    sha256,
)


def wait_status(base: str, repo: str, reference: str, status: int,
                timeout: float = 10.0) -> requests.Response:
    """Policies reach running servers within `trust.refresh_seconds` (1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        r = get_manifest(base, repo, reference)
        if r.status_code == status or time.monotonic() > deadline:
            assert r.status_code == status, (r.status_code, r.text)
            return r
        time.sleep(0.2)


@pytest.fixture
def keypairs(tmp_path: Path) -> dict[str, Path]:
    return generate_keys(tmp_path, "dev", "platform", "stranger")


@pytest.fixture
def clients(server: LiveServer, tmp_path: Path) -> Iterator[Clients]:
    c = Clients(tmp_path / "clients", server)
    yield c
    c.close()


def set_policy(server: LiveServer, pattern: str, keypairs: dict[str, Path],
               mode: str = "enforce") -> None:
    cli("trust", "set", pattern, "--require", f"developer={keypairs['dev']}.pub",
        "--require", f"platform={keypairs['platform']}.pub", "--mode", mode,
        "--data-dir", str(server.data_dir))


def test_dual_signature_policy_end_to_end(server: LiveServer, keypairs: dict[str, Path],
                                          clients: Clients, tmp_path: Path) -> None:
    """How the issue will be checked: push, two key pairs, a policy requiring both, refused
    with 403 naming the missing role, still refused with the developer's signature, served
    with both; `verify` names both signers."""
    image = push_image(server.url, "models/llama", "v1")
    assert get_manifest(server.url, "models/llama", "v1").status_code == 200
    set_policy(server, "models/*", keypairs)
    listed = cli("trust", "list", "--data-dir", str(server.data_dir)).stdout
    assert "models/*" in listed and "developer" in listed and "platform" in listed

    r = wait_status(server.url, "models/llama", "v1", 403)
    e = error(r)
    assert e["code"] == "DENIED"
    assert e["detail"]["missing_roles"] == ["developer", "platform"]  # type: ignore[index]
    assert "developer" in str(e["message"]) and "platform" in str(e["message"])
    by_digest = get_manifest(server.url, "models/llama", image.digest)
    assert by_digest.status_code == 403
    pulled = clients.skopeo("copy", clients.docker_ref("models/llama", "v1"),
                            f"oci:{tmp_path / 'refused'}:v1", check=False)
    assert pulled.returncode != 0 and "denied" in pulled.stderr.lower(), pulled.stderr

    # The platform cannot approve what its developer has not signed.
    early = cli("sign", "--platform", "--key", f"{keypairs['platform']}.key",
                "--data-dir", str(server.data_dir), ref(server, image), check=False)
    assert early.returncode != 0 and "developer" in early.stderr, early.stderr

    cli("sign", "--key", f"{keypairs['dev']}.key", "--identity", "alice@models",
        ref(server, image))
    r = get_manifest(server.url, "models/llama", "v1")
    assert r.status_code == 403, r.text
    assert error(r)["detail"]["missing_roles"] == ["platform"]  # type: ignore[index]
    assert "platform" in str(error(r)["message"])

    signed = cli("sign", "--platform", "--key", f"{keypairs['platform']}.key",
                 "--identity", "platform-release", "--data-dir", str(server.data_dir),
                 ref(server, image))
    assert image.digest in signed.stdout
    r = get_manifest(server.url, "models/llama", "v1")
    assert r.status_code == 200, r.text
    assert r.content == image.manifest
    pulled = clients.skopeo("copy", clients.docker_ref("models/llama", "v1"),
                            f"oci:{tmp_path / 'served'}:v1")
    assert pulled.returncode == 0

    out = cli("verify", "--key", f"developer={keypairs['dev']}.pub",
              "--key", f"platform={keypairs['platform']}.pub", ref(server, image)).stdout
    assert image.digest in out
    assert "developer" in out and "alice@models" in out
    assert "platform" in out and "platform-release" in out
    # A key that signed nothing verifies nothing.
    nobody = cli("verify", "--key", f"{keypairs['stranger']}.pub", ref(server, image),
                 check=False)
    assert nobody.returncode != 0 and "no valid signature" in nobody.stderr
    assert metric(server.url, "stablemirror_signature_checks_total", result="denied") >= 3
    assert metric(server.url, "stablemirror_signature_checks_total", result="ok") >= 1


def test_signatures_accumulate_in_cosign_layout(server: LiveServer,
                                                keypairs: dict[str, Path]) -> None:
    image = push_image(server.url, "apps/web", "v2")
    for name in ("dev", "platform"):
        cli("sign", "--key", f"{keypairs[name]}.key", ref(server, image, by_digest=True))
    again = cli("sign", "--key", f"{keypairs['dev']}.key", ref(server, image, by_digest=True))
    assert "Already signed" in again.stdout
    tag = f"sha256-{image.digest.split(':')[1]}.sig"
    r = get_manifest(server.url, "apps/web", tag)
    assert r.status_code == 200
    doc = json.loads(r.content)
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers"]
    assert len(doc["layers"]) == 2
    for name, layer in zip(("dev", "platform"), doc["layers"], strict=True):
        assert layer["mediaType"] == cosign.SIMPLESIGNING
        payload = requests.get(f"{server.url}/v2/apps/web/blobs/{layer['digest']}",
                               timeout=30).content
        claims = cosign.parse_payload(payload)
        assert claims is not None and claims.digest == image.digest
        assert claims.docker_reference == f"{server.host}/apps/web"
        public = keys.load_public_key(Path(f"{keypairs[name]}.pub").read_bytes())
        sig = base64.b64decode(layer["annotations"][cosign.SIGNATURE_ANNOTATION])
        assert cosign.verify_bytes(public, payload, sig)


def test_vector_key_signs_and_cosign_verifies(server: LiveServer, tmp_path: Path) -> None:
    """A key pair made by cosign (shared test vector) signs unchanged."""
    from tests.unit.trust.test_cosign import KEYS

    image = push_image(server.url, "vendor/tool")
    key = KEYS / "cosign-pemsigstorekey.key"
    cli("sign", "--key", str(key), ref(server, image), env={"STABLEMIRROR_KEY_PASSWORD": "hello"})
    out = cli("verify", "--key", f"vendor={KEYS / 'cosign-pemsigstorekey.pub'}",
              ref(server, image)).stdout
    assert "signed by vendor" in out
    wrong = cli("sign", "--key", str(key), ref(server, image), check=False,
                env={"STABLEMIRROR_KEY_PASSWORD": "not-hello"})
    assert wrong.returncode != 0 and "wrong password" in wrong.stderr


def test_warn_and_off_modes(server: LiveServer, keypairs: dict[str, Path]) -> None:
    push_image(server.url, "warned/app")
    push_image(server.url, "open/app")
    set_policy(server, "warned/*", keypairs, mode="warn")
    set_policy(server, "open/*", keypairs, mode="off")
    deadline = time.monotonic() + 10
    while metric(server.url, "stablemirror_signature_checks_total", result="warned") < 1:
        assert get_manifest(server.url, "warned/app", "v1").status_code == 200
        assert time.monotonic() < deadline, "warn mode never took effect"
        time.sleep(0.2)
    assert get_manifest(server.url, "open/app", "v1").status_code == 200
    assert "without required signature(s) developer, platform" in server.log()
    # Back to enforce without a restart.
    set_policy(server, "warned/*", keypairs, mode="enforce")
    wait_status(server.url, "warned/app", "v1", 403)
    cli("trust", "remove", "warned/*", "--data-dir", str(server.data_dir))
    wait_status(server.url, "warned/app", "v1", 200)


def forge(server: LiveServer, image: Image, key_prefix: Path, subject: str) -> None:
    """Append a signature by `key_prefix` over a payload naming `subject` to image's .sig."""
    private = keys.load_private_key(key_prefix.with_suffix(".key").read_bytes(),
                                    PASSWORD.encode())
    payload = cosign.make_payload(f"{server.host}/{image.repository}", Digest.parse(subject))
    tag = cosign.signature_tag(Digest.parse(image.digest))
    r = get_manifest(server.url, image.repository, tag)
    existing = cosign.signature_layers(r.content) if r.status_code == 200 else []
    layers, _ = cosign.append_signature(existing, payload, cosign.sign_bytes(private, payload))
    config = cosign.config_for(layers)
    push_blob(server.url, image.repository, payload)
    push_blob(server.url, image.repository, config)
    push_manifest(server.url, image.repository, tag, cosign.signature_manifest(config, layers))


def test_wrong_digest_and_wrong_role_count_as_missing(server: LiveServer,
                                                      keypairs: dict[str, Path]) -> None:
    image = push_image(server.url, "secure/app")
    other = push_image(server.url, "secure/app", "other")
    set_policy(server, "secure/*", keypairs)
    wait_status(server.url, "secure/app", "v1", 403)
    # Developer signature over a payload naming another image: does not count.
    forge(server, image, keypairs["dev"], other.digest)
    # The developer key signing again (role platform wanted) and a stranger's key: neither
    # makes a platform signature.
    forge(server, image, keypairs["dev"], image.digest)
    forge(server, image, keypairs["stranger"], image.digest)
    r = get_manifest(server.url, "secure/app", "v1")
    assert r.status_code == 403
    assert error(r)["detail"]["missing_roles"] == ["platform"]  # type: ignore[index]
    forge(server, image, keypairs["platform"], other.digest)
    assert get_manifest(server.url, "secure/app", "v1").status_code == 403
    forge(server, image, keypairs["platform"], image.digest)
    assert get_manifest(server.url, "secure/app", "v1").status_code == 200
    # `other` is named by signatures stored under image's tag only: still unsigned.
    assert get_manifest(server.url, "secure/app", "other").status_code == 403


def test_signatures_referrers_and_head_stay_reachable(server: LiveServer,
                                                      keypairs: dict[str, Path]) -> None:
    image = push_image(server.url, "guarded/app")
    cli("sign", "--key", f"{keypairs['dev']}.key", ref(server, image))
    sbom = b'{"spdxVersion":"SPDX-2.3"}'
    empty = b"{}"
    referrer = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": push_blob(server.url, "guarded/app", empty), "size": 2},
        "layers": [{"mediaType": "application/spdx+json",
                    "digest": push_blob(server.url, "guarded/app", sbom), "size": len(sbom)}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": image.digest, "size": len(image.manifest)}}).encode()
    referrer_digest = push_manifest(server.url, "guarded/app", sha256(referrer), referrer)
    set_policy(server, "guarded/*", keypairs)
    wait_status(server.url, "guarded/app", "v1", 403)
    sig_tag = f"sha256-{image.digest.split(':')[1]}.sig"
    assert get_manifest(server.url, "guarded/app", sig_tag).status_code == 200
    assert get_manifest(server.url, "guarded/app", referrer_digest).status_code == 200
    r = requests.get(f"{server.url}/v2/guarded/app/referrers/{image.digest}", timeout=30)
    assert r.status_code == 200 and referrer_digest in r.text
    head = get_manifest(server.url, "guarded/app", "v1", method="HEAD")
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == image.digest
    # An image pushed under a signature-looking tag is still an image: checked.
    disguised = push_image(server.url, "guarded/app", "sha256-" + "0" * 64 + ".sig")
    r = get_manifest(server.url, "guarded/app", disguised.tag)
    assert r.status_code == 403, r.text


def test_signed_index_covers_its_platform_manifests(server: LiveServer,
                                                    keypairs: dict[str, Path]) -> None:
    amd = push_image(server.url, "multi/app", "amd64", arch="amd64")
    arm = push_image(server.url, "multi/app", "arm64", arch="arm64")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.digest,
         "size": len(img.manifest), "platform": {"architecture": img.tag, "os": "linux"}}
        for img in (amd, arm)]}).encode()
    push_manifest(server.url, "multi/app", "v1", index, OCI_INDEX)
    set_policy(server, "multi/*", keypairs)
    wait_status(server.url, "multi/app", "v1", 403)
    for name in ("dev", "platform"):
        cli("sign", "--key", f"{keypairs[name]}.key", f"{server.host}/multi/app:v1")
    assert get_manifest(server.url, "multi/app", "v1").status_code == 200
    assert get_manifest(server.url, "multi/app", amd.digest).status_code == 200
    # Tagged alone, the platform manifest is what the index lists: same digest, allowed;
    # an image the index does not list is not.
    stray = push_image(server.url, "multi/app", "stray")
    assert get_manifest(server.url, "multi/app", stray.digest).status_code == 403


def test_policy_from_config_file(server_factory: Callable[..., LiveServer],
                                 keypairs: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(json.dumps({"trust": {"policies": [{
        "pattern": "prod/*", "mode": "enforce",
        "require": {"developer": [f"{keypairs['dev']}.pub"]}}]}}))
    server = server_factory("--config", str(config))
    image = push_image(server.url, "prod/api")
    assert get_manifest(server.url, "prod/api", "v1").status_code == 403
    assert get_manifest(server.url, "staging/api", "v1").status_code == 404
    listed = cli("trust", "list", "--config", str(config), "--data-dir",
                 str(server.data_dir)).stdout
    assert "prod/*" in listed and "config" in listed
    cli("sign", "--key", f"{keypairs['dev']}.key", ref(server, image))
    assert get_manifest(server.url, "prod/api", "v1").status_code == 200
