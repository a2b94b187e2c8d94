"""The webhook signature: HMAC-SHA256 of the exact request body with the endpoint's secret,
hex, in `Stablemirror-Signature-256: sha256=<hex>` (the form GitHub's webhooks use, so
existing verifiers fit). The body carries each event's id and timestamp: a replayed body is
a duplicate the receiver drops by id."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Stablemirror-Signature-256"
PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Constant-time: the comparison does not tell an attacker how much of it was right."""
    return hmac.compare_digest(sign(secret, body), header.strip())
