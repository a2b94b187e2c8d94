"""Signing and verifying images in a registry over HTTP, cosign's way (the CLI's side)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stablemirror.client.reference import ImageReference
from stablemirror.client.registry import FetchedManifest, RegistryClient
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown, Denied, DigestInvalid
from stablemirror.trust.cosign import (
    IDENTITY_CLAIM,
    MAX_PAYLOAD_BYTES,
    SignatureLayer,
    append_signature,
    config_for,
    decode_signature,
    make_payload,
    sign_bytes,
    signature_layers,
    signature_manifest,
    signature_tag,
    verify_bytes,
)
from stablemirror.trust.keys import PrivateKey
from stablemirror.trust.policy import RoleKey
from stablemirror.trust.verify import VerifiedSignature, satisfied_roles, verify_signatures


@dataclass(frozen=True, slots=True)
class Signatures:
    digest: Digest
    manifest: FetchedManifest | None  # the `.sig` manifest, if there is one
    layers: list[SignatureLayer]
    payloads: list[tuple[SignatureLayer, bytes]]


@dataclass(frozen=True, slots=True)
class SignResult:
    digest: Digest
    tag: str
    signatures: int  # layers in the signature manifest now
    added: bool  # False: this very signature was already there


async def fetch_signatures(client: RegistryClient, ref: ImageReference) -> Signatures:
    digest = await client.resolve(ref.repository, ref.reference)
    manifest = await client.find_manifest(ref.repository, signature_tag(digest), mt.OCI_MANIFEST)
    layers = signature_layers(manifest.content) if manifest is not None else []
    payloads: list[tuple[SignatureLayer, bytes]] = []
    for layer in layers:
        try:
            payload = await client.get_blob(ref.repository, layer.payload_digest,
                                            MAX_PAYLOAD_BYTES)
        except (BlobUnknown, DigestInvalid):
            continue
        payloads.append((layer, payload))
    return Signatures(digest, manifest, layers, payloads)


async def verify_image(client: RegistryClient, ref: ImageReference, keys: Sequence[RoleKey]
                       ) -> tuple[Digest, list[VerifiedSignature]]:
    sigs = await fetch_signatures(client, ref)
    return sigs.digest, verify_signatures(sigs.digest, sigs.payloads, keys)


async def sign_image(client: RegistryClient, ref: ImageReference, key: PrivateKey, *,
                     identity: str | None = None,
                     require: Sequence[RoleKey] = ()) -> SignResult:
    """Add a signature of `ref`'s manifest digest to its `.sig` manifest.

    `require`: keys whose roles must all have signed already (the platform signs only
    what its developer signed); raises Denied naming the roles that have not."""
    sigs = await fetch_signatures(client, ref)
    if require:
        have = satisfied_roles(verify_signatures(sigs.digest, sigs.payloads, require))
        missing = sorted({k.role for k in require} - have)
        if missing:
            raise Denied(digest=str(sigs.digest), missing_roles=missing,
                         reason=f"no valid {', '.join(missing)} signature yet")
    optional = {IDENTITY_CLAIM: identity} if identity else None
    payload = make_payload(ref.name, sigs.digest, optional)
    tag = signature_tag(sigs.digest)
    for layer, existing in sigs.payloads:
        signature = decode_signature(layer.signature_b64)
        if existing == payload and signature is not None and verify_bytes(
                key.public_key(), payload, signature):
            return SignResult(sigs.digest, tag, len(sigs.layers), False)  # signed already
    layers, added = append_signature(sigs.layers, payload, sign_bytes(key, payload))
    if added:
        await client.push_blob(ref.repository, payload)
        config = config_for(layers)
        await client.push_blob(ref.repository, config)
        await client.put_manifest(ref.repository, tag, signature_manifest(config, layers),
                                  mt.OCI_MANIFEST)
    return SignResult(sigs.digest, tag, len(layers), added)
