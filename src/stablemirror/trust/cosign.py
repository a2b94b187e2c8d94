"""cosign's classic signature layout, pure (no I/O).

* the signature: ECDSA (digest by curve: P-256 SHA-256, P-384 SHA-384, P-521 SHA-512;
  ASN.1 DER, raw r||s accepted on verify) or RSA PKCS#1 v1.5 SHA-256, over the exact
  payload bytes, base64 in the layer annotation `dev.cosignproject.cosign/signature`;
* the payload: simple signing JSON naming the signed manifest digest;
* the signature manifest: tag `sha256-<hex>.sig`, one layer per signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import DigestInvalid
from stablemirror.trust.keys import PrivateKey, PublicKey

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MAX_PAYLOAD_BYTES = 64 * 1024
IDENTITY_CLAIM = "identity"  # our `optional` annotation naming the signer


def signature_tag(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.hex}.sig"


# -- raw signatures ---------------------------------------------------------------------------
def _ec_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    if curve.key_size > 384:
        return hashes.SHA512()
    if curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def sign_bytes(key: PrivateKey, payload: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(_ec_hash(key.curve)))
    return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())


def verify_bytes(key: PublicKey, payload: bytes, signature: bytes) -> bool:
    """True iff `signature` over `payload` verifies with `key` (never raises on bad input)."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            return True
        try:
            decode_dss_signature(signature)
            der = signature
        except ValueError:
            # Not ASN.1: IEEE P1363 r||s, as sigstore's ECDSAVerifier accepts.
            width = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * width:
                return False
            r = int.from_bytes(signature[:width], "big")
            s = int.from_bytes(signature[width:], "big")
            der = encode_dss_signature(r, s)
        key.verify(der, payload, ec.ECDSA(_ec_hash(key.curve)))
        return True
    except (InvalidSignature, ValueError):
        return False


def decode_signature(b64: str) -> bytes | None:
    try:
        return base64.b64decode("".join(b64.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


# -- simple signing payloads -----------------------------------------------------------------------
def make_payload(docker_reference: str, digest: Digest,
                 optional: dict[str, str] | None = None) -> bytes:
    """The payload bytes cosign writes: compact JSON, fixed key order."""
    doc: dict[str, Any] = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": str(digest)},
            "type": PAYLOAD_TYPE,
        },
        "optional": dict(sorted(optional.items())) if optional else None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Payload:
    docker_reference: str
    digest: str
    optional: dict[str, Any]

    @property
    def identity(self) -> str | None:
        value = self.optional.get(IDENTITY_CLAIM)
        return value if isinstance(value, str) else None


def parse_payload(raw: bytes) -> Payload | None:
    """The claims of a simple signing payload, or None if it is not one."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        return None
    try:
        doc = json.loads(raw)
        critical = doc["critical"]
        if critical.get("type") != PAYLOAD_TYPE:
            return None
        digest = critical["image"]["docker-manifest-digest"]
        reference = critical.get("identity", {}).get("docker-reference", "")
        optional = doc.get("optional") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(digest, str) or not isinstance(optional, dict):
        return None
    return Payload(str(reference), digest, optional)


# -- signature manifests ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SignatureLayer:
    """One signature in a `.sig` manifest: its payload blob and base64 signature."""

    payload_digest: Digest
    payload_size: int
    signature_b64: str
    raw: dict[str, Any]  # the descriptor as found, kept when signatures accumulate


def signature_layers(manifest_bytes: bytes) -> list[SignatureLayer]:
    """The simple signing layers of a signature manifest (others are ignored)."""
    try:
        doc = json.loads(manifest_bytes)
        layers = doc.get("layers") if isinstance(doc, dict) else None
    except ValueError:
        return []
    found: list[SignatureLayer] = []
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLESIGNING:
            continue
        annotations = layer.get("annotations")
        sig = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        size = layer.get("size")
        try:
            digest = Digest.parse(str(layer.get("digest")))
        except DigestInvalid:
            continue
        if isinstance(sig, str) and isinstance(size, int) and 0 <= size <= MAX_PAYLOAD_BYTES:
            found.append(SignatureLayer(digest, size, sig, layer))
    return found


def layer_descriptor(payload: bytes, signature: bytes) -> dict[str, Any]:
    return {
        "mediaType": SIMPLESIGNING,
        "size": len(payload),
        "digest": str(Digest.of(payload)),
        "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
    }


def config_for(layers: list[dict[str, Any]]) -> bytes:
    """go-containerregistry's empty-image config with one history entry per layer."""
    epoch = "0001-01-01T00:00:00Z"
    doc = {
        "architecture": "",
        "created": epoch,
        "history": [{"created": epoch} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        "config": {},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def signature_manifest(config: bytes, layers: list[dict[str, Any]]) -> bytes:
    """The compact OCI manifest cosign writes at the `.sig` tag."""
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config),
                   "digest": str(Digest.of(config))},
        "layers": layers,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def append_signature(existing: list[SignatureLayer], payload: bytes,
                     signature: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The layer list with a new signature appended; False if it was already there."""
    new = layer_descriptor(payload, signature)
    layers = [layer.raw for layer in existing]
    for layer in existing:
        if (str(layer.payload_digest) == new["digest"]
                and layer.signature_b64 == new["annotations"][SIGNATURE_ANNOTATION]):
            return layers, False
    return [*layers, new], True
