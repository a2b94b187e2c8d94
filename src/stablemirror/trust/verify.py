"""Checking cosign signatures of one manifest digest against role keys (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stablemirror.oci.digest import Digest
from stablemirror.trust.cosign import (
    SignatureLayer,
    decode_signature,
    parse_payload,
    verify_bytes,
)
from stablemirror.trust.policy import RoleKey


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    key: RoleKey
    identity: str | None  # the signer's `identity` claim, when the payload carries one
    docker_reference: str
    payload_digest: str

    @property
    def role(self) -> str:
        return self.key.role


def verify_signatures(subject: Digest, signatures: Sequence[tuple[SignatureLayer, bytes]],
                      keys: Sequence[RoleKey]) -> list[VerifiedSignature]:
    """Every (signature, key) pair that verifies over a payload naming `subject`.

    A payload naming another digest, bytes that do not match the layer digest, or a
    signature by a key not in `keys` never count."""
    found: list[VerifiedSignature] = []
    for layer, payload in signatures:
        if Digest.of(payload, layer.payload_digest.algorithm) != layer.payload_digest:
            continue
        claims = parse_payload(payload)
        if claims is None or claims.digest != str(subject):
            continue
        signature = decode_signature(layer.signature_b64)
        if signature is None:
            continue
        for key in keys:
            if verify_bytes(key.key, payload, signature):
                found.append(VerifiedSignature(key, claims.identity, claims.docker_reference,
                                               str(layer.payload_digest)))
    return found


def satisfied_roles(verified: Sequence[VerifiedSignature]) -> set[str]:
    return {v.role for v in verified}
