"""Signed exemptions: the decision to serve one manifest despite its findings.

An exemption is a JSON document naming the repository, the manifest digest, who decided,
why, and the finding kinds it accepts, signed with a trust key (cosign format,
trust/keys.py). The server honours it only when the signature verifies with one of
`scanning.exemption_keys`; the document is re-verified on every use, so editing the row
in the index voids it. Recording one (`stablemirror scan exempt`) and using one are audited.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any

from stablemirror.scanning.findings import Finding
from stablemirror.scanning.store import Exemption
from stablemirror.trust.cosign import sign_bytes, verify_bytes
from stablemirror.trust.keys import PrivateKey, PublicKey, key_id

SCHEMA = "stablemirror.scan.exemption/v1"


def exemption_document(repository: str, digest: str, actor: str, reason: str,
                       kinds: Sequence[str]) -> str:
    return json.dumps({"schema": SCHEMA, "repository": repository, "digest": digest,
                       "actor": actor, "reason": reason, "kinds": sorted(set(kinds)),
                       "created_at": time.time()}, sort_keys=True, separators=(",", ":"))


def sign_exemption(key: PrivateKey, repository: str, digest: str, actor: str, reason: str,
                   kinds: Sequence[str]) -> Exemption:
    document = exemption_document(repository, digest, actor, reason, kinds)
    signature = base64.b64encode(sign_bytes(key, document.encode())).decode()
    return Exemption(repository, digest, document, signature, key_id(key.public_key()))


def verified(e: Exemption, keys: Sequence[PublicKey]) -> dict[str, Any] | None:
    """The exemption's document when a trusted key signed it for this very manifest."""
    try:
        signature = base64.b64decode(e.signature, validate=True)
    except ValueError:
        return None
    payload = e.document.encode()
    if not any(verify_bytes(k, payload, signature) for k in keys):
        return None
    try:
        doc = json.loads(e.document)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return None
    if doc.get("repository") != e.repository or doc.get("digest") != e.digest:
        return None
    return doc


def covers(doc: dict[str, Any], findings: Sequence[Finding]) -> bool:
    """An exemption names the finding kinds it accepts ("*" for any)."""
    kinds = doc.get("kinds")
    if not isinstance(kinds, list):
        return False
    return "*" in kinds or all(f.kind in kinds for f in findings)
