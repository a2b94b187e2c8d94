"""A node's tracker credential: HMAC-SHA256 of (cluster, node id) under the cluster's secret.

The tracker (libtorrent's HTTP announce cannot carry an Authorization header) finds it in the
announce URL's query; only the edge and the cluster's nodes know the secret, so a peer list
of one cluster is never handed to anybody else (docs/p2p.md)."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode


def sign(secret: str, cluster: str, node: str) -> str:
    return hmac.new(secret.encode(), f"{cluster}\n{node}".encode(), hashlib.sha256).hexdigest()


def query(secret: str, cluster: str, node: str) -> str:
    return urlencode({"cluster": cluster, "node": node, "sig": sign(secret, cluster, node)})


def verify(secrets: dict[str, str], cluster: str, node: str, sig: str) -> bool:
    secret = secrets.get(cluster)
    if secret is None or not node or len(node) > 128:
        return False
    return hmac.compare_digest(sign(secret, cluster, node), sig)
