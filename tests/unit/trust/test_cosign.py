"""cosign compatibility against the real test vectors in shared/testdata/cosign (its README
says what each file is and what a correct implementation must do with it)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stablemirror.oci.digest import Digest
from stablemirror.trust import cosign, keys

VECTORS = Path(__file__).resolve().parents[4] / "shared" / "testdata" / "cosign"
if not VECTORS.is_dir():  # CI lays shared/ beside the clone; a session has it at /work/shared
    VECTORS = Path("/work/shared/testdata/cosign")
KEYS = VECTORS / "encrypted-keys"
BOX = VECTORS / "encrypted-box"
SIMPLE = VECTORS / "simplesigning"


def test_vectors_are_there() -> None:
    assert (VECTORS / "README.md").is_file(), f"cosign test vectors not found at {VECTORS}"


# -- encrypted private keys ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "password"), [
    ("cosign-pemsigstorekey", "hello"),  # ENCRYPTED SIGSTORE PRIVATE KEY, N=32768
    ("cosign-pemcosignkey", "hello"),  # legacy ENCRYPTED COSIGN PRIVATE KEY
    ("sigstore-rs-cosign_generated_encrypted_empty_private", ""),  # cosign binary, N=65536
])
def test_cosign_private_keys_load(name: str, password: str) -> None:
    private = keys.load_private_key((KEYS / f"{name}.key").read_bytes(), password.encode())
    public = keys.load_public_key((KEYS / f"{name}.pub").read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP256R1)
    assert keys.key_id(private.public_key()) == keys.key_id(public)
    # ... and what it signs verifies with the published public key.
    signature = cosign.sign_bytes(private, b"payload")
    assert cosign.verify_bytes(public, b"payload", signature)


def test_wrong_password_fails_the_mac() -> None:
    for name in ("cosign-pemsigstorekey", "cosign-pemcosignkey"):
        with pytest.raises(ValueError, match="wrong password"):
            keys.load_private_key((KEYS / f"{name}.key").read_bytes(), b"wrong-password")


def test_sec1_plaintext_is_rejected_like_cosign() -> None:
    pem = (KEYS / "cosign-pemcosigneckey.NEGATIVE.key").read_bytes()
    with pytest.raises(ValueError, match="PKCS#8"):
        keys.load_private_key(pem, b"hello")
    # The box itself opens fine: the rejection is about the container format.
    _type, body = keys.pem_decode(pem)
    der = keys.decrypt_box(body, b"hello")
    sec1 = serialization.load_pem_private_key(
        (KEYS / "cosign-validecp256.sec1.pem").read_bytes(), password=None)
    assert der == sec1.private_bytes(serialization.Encoding.DER,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
    assert not keys.is_pkcs8(der)


def test_other_pem_types_are_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported PEM type"):
        keys.load_private_key((KEYS / "cosign-validecp256.sec1.pem").read_bytes(), b"")
    with pytest.raises(ValueError, match="unsupported PEM type"):
        keys.load_public_key((KEYS / "cosign-validecp256.sec1.pem").read_bytes())


# -- the encryption box alone (go-securesystemslib) ---------------------------------
def test_sslib_decrypt_vector() -> None:
    box = (BOX / "sslib-decrypt-N32768.json").read_bytes()
    assert keys.decrypt_box(box, b"supersecret") == b"reallyimportant"


@pytest.mark.parametrize("name", ["sslib-marshal-legacy-N32768.json",
                                  "sslib-marshal-standard-N65536.json",
                                  "sslib-marshal-owasp-N131072.json"])
def test_sslib_kdf_vectors(name: str) -> None:
    plain = keys.decrypt_box((BOX / name).read_bytes(), b"supersecret")
    assert plain == b'"cmVhbGx5aW1wb3J0YW50"'
    assert base64.b64decode(json.loads(plain)) == b"reallyimportant"


def test_unsupported_scrypt_parameters_rejected_before_scrypt() -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="unsupported scrypt parameters"):
        keys.decrypt_box((BOX / "sslib-unsupported-params.NEGATIVE.json").read_bytes(),
                         b"supersecret")
    assert time.monotonic() - started < 0.5


def test_box_round_trip_and_format() -> None:
    sealed = keys.encrypt_box(b"secret bytes", b"pw")
    doc = json.loads(sealed)
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    assert list(doc["kdf"]) == ["name", "params", "salt"]
    assert doc["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    assert len(base64.b64decode(doc["ciphertext"])) == len(b"secret bytes") + 16
    assert sealed == json.dumps(doc, separators=(",", ":")).encode()  # compact, as Go writes
    assert keys.decrypt_box(sealed, b"pw") == b"secret bytes"


# -- generated key pairs ----------------------------------------------------
def test_generated_pair_is_cosign_format() -> None:
    pair = keys.generate_key_pair(b"")
    text = pair.private_pem.decode()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert text.endswith("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = text.splitlines()[1:-1]
    assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
    _type, box = keys.pem_decode(pair.private_pem)
    der = keys.decrypt_box(box, b"")
    assert keys.is_pkcs8(der)
    assert pair.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    private = keys.load_private_key(pair.private_pem, b"")
    public = keys.load_public_key(pair.public_pem)
    assert keys.key_id(public) == pair.key_id == keys.key_id(private.public_key())
    with pytest.raises(ValueError):
        keys.load_private_key(pair.private_pem, b"not the password")


# -- simple signing signatures ----------------------------------------------------
@pytest.mark.parametrize(("folder", "signature", "public"), [
    ("containers-image-cosign-valid", "signature.b64", "cosign.pub"),
    ("containers-image-cosign-valid", "signature-2.b64", "cosign.pub"),
    ("containers-image-cosign-key-rekor", "signature.b64", "cosign.pub"),
    ("sigstore-rs-busybox", "signature.b64", "cosign.pub"),
    ("sigstore-rs-suse-obs-rsa", "signature.b64", "public.pem"),  # RSA PKCS#1 v1.5
])
def test_vector_signatures_verify(folder: str, signature: str, public: str) -> None:
    d = SIMPLE / folder
    key = keys.load_public_key((d / public).read_bytes())
    payload = (d / "payload.json").read_bytes()
    sig = cosign.decode_signature((d / signature).read_text())
    assert sig is not None
    assert cosign.verify_bytes(key, payload, sig)
    assert not cosign.verify_bytes(key, payload + b"\n", sig)  # exact bytes only
    assert cosign.parse_payload(payload) is not None


@pytest.mark.parametrize("folder", ["containers-image-cosign-valid",
                                    "containers-image-cosign-key-rekor"])
def test_payload_names_the_manifest_digest(folder: str) -> None:
    d = SIMPLE / folder
    claims = cosign.parse_payload((d / "payload.json").read_bytes())
    assert claims is not None
    assert claims.digest == str(Digest.of((d / "image-manifest.json").read_bytes()))


def test_our_payload_is_byte_identical_to_cosigns() -> None:
    d = SIMPLE / "containers-image-cosign-valid"
    claims = cosign.parse_payload((d / "payload.json").read_bytes())
    assert claims is not None
    ours = cosign.make_payload(claims.docker_reference, Digest.parse(claims.digest))
    assert ours == (d / "payload.json").read_bytes()
    obs = SIMPLE / "sigstore-rs-suse-obs-rsa" / "payload.json"
    claims = cosign.parse_payload(obs.read_bytes())
    assert claims is not None and claims.optional == {"creator": "OBS"}
    assert cosign.make_payload(claims.docker_reference, Digest.parse(claims.digest),
                               {"creator": "OBS"}) == obs.read_bytes()


def test_der_and_p1363_both_verify() -> None:
    d = VECTORS / "blob" / "sigstore-ecdsa-der-and-p1363"
    key = keys.load_public_key((d / "public.pem").read_bytes())
    message = (d / "message").read_bytes()
    for name in ("signature-der.b64", "signature-p1363.b64"):
        sig = cosign.decode_signature((d / name).read_text())
        assert sig is not None and cosign.verify_bytes(key, message, sig), name
    assert not cosign.verify_bytes(key, message + b"!", base64.b64decode(
        (d / "signature-der.b64").read_text()))


def test_our_signatures_verify_the_way_cosign_does() -> None:
    """ECDSA-P256-SHA256, ASN.1 DER, over the exact payload bytes: checked with the plain
    `cryptography` verifier, not our own code."""
    private = keys.load_private_key((KEYS / "cosign-pemsigstorekey.key").read_bytes(), b"hello")
    public = serialization.load_pem_public_key((KEYS / "cosign-pemsigstorekey.pub").read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    payload = cosign.make_payload("127.0.0.1:5000/models/llama",
                                  Digest.of(b"manifest"), {"identity": "alice"})
    layer = cosign.layer_descriptor(payload, cosign.sign_bytes(private, payload))
    sig = base64.b64decode(layer["annotations"][cosign.SIGNATURE_ANNOTATION])
    public.verify(sig, payload, ec.ECDSA(hashes.SHA256()))  # raises if it does not verify
    assert layer["digest"] == "sha256:" + hashlib.sha256(payload).hexdigest()


def test_signature_manifest_layout() -> None:
    private = keys.load_private_key((KEYS / "cosign-pemsigstorekey.key").read_bytes(), b"hello")
    subject = Digest.of(b"image manifest")
    p1 = cosign.make_payload("r/x", subject)
    p2 = cosign.make_payload("r/x", subject, {"identity": "platform"})
    layers, added = cosign.append_signature([], p1, cosign.sign_bytes(private, p1))
    assert added
    first = cosign.signature_manifest(cosign.config_for(layers), layers)
    existing = cosign.signature_layers(first)
    layers, added = cosign.append_signature(existing, p2, cosign.sign_bytes(private, p2))
    assert added and len(layers) == 2
    config = cosign.config_for(layers)
    manifest = cosign.signature_manifest(config, layers)
    doc = json.loads(manifest)
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers"]
    assert list(doc["config"]) == ["mediaType", "size", "digest"]
    assert [list(layer) for layer in doc["layers"]] == [
        ["mediaType", "size", "digest", "annotations"]] * 2
    assert json.loads(config)["rootfs"]["diff_ids"] == [layer["digest"] for layer in layers]
    assert cosign.signature_tag(subject) == f"sha256-{subject.hex}.sig"
    # The same signature again is not appended twice.
    again, added = cosign.append_signature(cosign.signature_layers(manifest), p2,
                                           base64.b64decode(layers[1]["annotations"][
                                               cosign.SIGNATURE_ANNOTATION]))
    assert not added and len(again) == 2


def test_parse_payload_rejects_other_documents() -> None:
    assert cosign.parse_payload(b"not json") is None
    assert cosign.parse_payload(b'{"critical":{"type":"something else"}}') is None
    assert cosign.parse_payload(b"{}") is None
