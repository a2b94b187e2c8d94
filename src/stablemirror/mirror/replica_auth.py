"""Signatures on requests between replicas of one mirror (the internal blob endpoint).

Only a holder of the shared secret can call `/_replica/...`: each request carries
`Authorization: Stablemirror-Replica <unix time>.<hex HMAC-SHA256(secret, method \\n path
\\n time)>`, accepted within a short clock skew. Signing the path binds the signature to one
blob; the time bounds a replayed one to the skew window. No state is kept."""

from __future__ import annotations

import hashlib
import hmac

SCHEME = "Stablemirror-Replica"
SKEW_SECONDS = 60.0


def _mac(secret: str, method: str, path: str, stamp: str) -> str:
    message = f"{method}\n{path}\n{stamp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, now: float) -> str:
    stamp = str(int(now))
    return f"{SCHEME} {stamp}.{_mac(secret, method, path, stamp)}"


def verify(secret: str, method: str, path: str, header: str, now: float) -> bool:
    scheme, _, credentials = header.partition(" ")
    stamp, dot, mac = credentials.partition(".")
    if scheme != SCHEME or not dot or not stamp.isdigit() or len(stamp) > 12:
        return False
    if abs(now - int(stamp)) > SKEW_SECONDS:
        return False
    return hmac.compare_digest(mac, _mac(secret, method, path, stamp))
