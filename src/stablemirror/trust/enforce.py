"""Trust enforcement: a RegistryService around the inner one (hosted or mirrored alike).

A manifest GET in a repository under a policy is checked before its bytes go out: the
cosign signatures at `sha256-<hex>.sig` (read through the inner service, so a mirror pulls
them through from upstream) must include, for every required role, one signature that
verifies with a key of that role over a payload naming this very digest. A manifest listed
by a signed index in the same repository inherits the index's signatures (a multi-arch pull
fetches the platform manifest by digest). `enforce` answers 403 DENIED naming the missing
roles; `warn` serves, logs, counts and audits; `off` does nothing.

Never checked: HEAD (no content leaves; clients and signers resolve tags with it) and
supply-chain artifacts themselves (signatures, attestations, SBOMs, referrers indexes),
recognised by their content, not their tag, so an image cannot hide behind a `.sig` tag.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from stablemirror.index.audit_events import DENIED, OK, AuditEvent, AuditSink
from stablemirror.index.protocol import StoredManifest
from stablemirror.index.trust_rows import TrustIndex
from stablemirror.metrics import Metrics
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import Denied, ManifestUnknown, NameUnknown, OCIError
from stablemirror.registry.forwarding import ForwardingRegistry
from stablemirror.registry.protocol import RegistryService, RequestContext
from stablemirror.trust.policy import PolicySource, TrustPolicy

# Signature checks (cosign.py, verify.py: cryptography) are imported by the first pull a
# policy covers: a server without trust policies never loads them (docs/footprint.md).
if TYPE_CHECKING:
    from stablemirror.trust.cosign import SignatureLayer

log = logging.getLogger("stablemirror.trust")


# Layer / artifact types of signatures, attestations and SBOMs: never runnable content.
ARTIFACT_TYPE_PREFIXES = (
    "application/vnd.dev.cosign.",
    "application/vnd.dev.sigstore.",
    "application/vnd.dsse.envelope",
    "application/vnd.in-toto",
    "application/vnd.cncf.notary.",
    "application/spdx",
    "text/spdx",
    "application/vnd.cyclonedx",
    "application/vnd.syft",
    "application/vnd.oci.empty.v1+json",
    "application/vnd.stablemirror.scan.",  # scan reports (scanning/report.py)
)
CACHE_SIZE = 4096


def _artifact_type(media_type: Any) -> bool:
    return isinstance(media_type, str) and media_type.startswith(ARTIFACT_TYPE_PREFIXES)


def is_supply_chain_artifact(content: bytes) -> bool:
    """A signature / attestation / SBOM manifest, or an index listing only such artifacts."""
    try:
        doc = json.loads(content)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    if isinstance(doc.get("manifests"), list):
        entries = doc["manifests"]
        return bool(entries) and all(
            isinstance(e, dict) and _artifact_type(e.get("artifactType")) for e in entries)
    layers = doc.get("layers")
    if not isinstance(layers, list):
        return False
    if not layers:
        return doc.get("subject") is not None and _artifact_type(doc.get("artifactType"))
    return all(isinstance(layer, dict) and _artifact_type(layer.get("mediaType"))
               for layer in layers)


class TrustEnforcer(ForwardingRegistry):
    def __init__(self, inner: RegistryService, policies: PolicySource, index: TrustIndex,
                 metrics: Metrics | None = None, audit: AuditSink | None = None) -> None:
        super().__init__(inner)
        self.policies = policies
        self.index = index
        self.metrics = metrics
        self.audit = audit
        # (policy fingerprint, .sig manifest digest, subject) -> roles satisfied
        self._cache: OrderedDict[tuple[str, str, str], frozenset[str]] = OrderedDict()

    async def get_manifest(self, ctx: RequestContext, repository: str, reference: str
                           ) -> StoredManifest:
        found = await self.inner.get_manifest(ctx, repository, reference)
        if ctx.method == "HEAD":
            return found
        policy = await self.policies.for_repository(repository)
        if policy is None or policy.mode == "off" or is_supply_chain_artifact(found.content):
            return found
        missing = await self.missing_roles(ctx, repository, Digest.parse(found.digest), policy)
        if not missing:
            self._count("ok")
            return found
        detail = {"policy": policy.pattern, "mode": policy.mode, "missing_roles": missing}
        if policy.mode == "warn":
            log.warning("serving %s@%s without required signature(s) %s (policy %s, warn)",
                        repository, found.digest, ", ".join(missing), policy.pattern)
            self._count("warned")
            await self._audit(ctx, repository, reference, found.digest, OK, detail)
            return found
        log.info("denied %s@%s: missing signature(s) %s (policy %s)", repository,
                 found.digest, ", ".join(missing), policy.pattern)
        self._count("denied")
        await self._audit(ctx, repository, reference, found.digest, DENIED, detail)
        raise Denied(repository=repository, digest=found.digest, missing_roles=missing,
                     policy=policy.pattern,
                     reason=f"missing required signature(s): {', '.join(missing)}")

    async def missing_roles(self, ctx: RequestContext, repository: str, digest: Digest,
                            policy: TrustPolicy) -> list[str]:
        required = set(policy.roles)
        have = await self._satisfied(ctx, repository, digest, policy)
        if required - have:
            for parent in await self.index.parent_indexes(repository, str(digest)):
                have |= await self._satisfied(ctx, repository, Digest.parse(parent), policy)
        return sorted(required - have)

    async def _satisfied(self, ctx: RequestContext, repository: str, digest: Digest,
                         policy: TrustPolicy) -> set[str]:
        from stablemirror.trust.cosign import signature_layers, signature_tag
        from stablemirror.trust.verify import satisfied_roles, verify_signatures

        try:
            sig = await self.inner.get_manifest(ctx, repository, signature_tag(digest))
        except (ManifestUnknown, NameUnknown):
            return set()
        except OCIError as e:  # e.g. a mirror whose upstream is down: nothing to verify
            log.warning("signatures of %s@%s unavailable: %s", repository, digest, e.describe())
            return set()
        key = (policy.fingerprint, sig.digest, str(digest))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return set(cached)
        pairs: list[tuple[SignatureLayer, bytes]] = []
        for layer in signature_layers(sig.content):
            payload = await self._payload(ctx, repository, layer)
            if payload is not None:
                pairs.append((layer, payload))
        roles = frozenset(satisfied_roles(verify_signatures(digest, pairs, policy.keys)))
        self._cache[key] = roles
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return set(roles)

    async def _payload(self, ctx: RequestContext, repository: str, layer: SignatureLayer
                       ) -> bytes | None:
        from stablemirror.trust.cosign import MAX_PAYLOAD_BYTES

        try:
            source = await self.inner.open_blob(ctx, repository, str(layer.payload_digest))
        except OCIError:
            return None
        if source.size > MAX_PAYLOAD_BYTES:
            return None
        buf = bytearray()
        async for chunk in source.open_stream(0, source.size):
            buf += chunk
            if len(buf) > MAX_PAYLOAD_BYTES:
                return None
        return bytes(buf)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            if result == "ok":
                self.metrics.signature_check("ok")
            elif result == "warned":
                self.metrics.signature_check("warned")
            else:
                self.metrics.signature_check("denied")

    async def _audit(self, ctx: RequestContext, repository: str, reference: str, digest: str,
                     result: str, detail: dict[str, Any]) -> None:
        if self.audit is None:
            return
        event = AuditEvent(action="manifest.pull.policy", actor=ctx.actor or "",
                           client=ctx.client, user_agent=ctx.user_agent,
                           repository=repository, reference=reference, digest=digest,
                           result=result, detail=detail, request_id=ctx.request_id)
        try:
            await self.audit(event)
        except Exception:
            log.exception("could not audit the policy decision on %s@%s", repository, digest)
