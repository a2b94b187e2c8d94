"""Who a client is, for gray-release cohorts (pure, no I/O).

The center resolves a channel per identity: the authenticated subject (user or robot);
else the `Stablemirror-Client-Id` header, which stablemirror mirrors send; else the client
address (`X-Forwarded-For` counts only when the peer is a configured trusted proxy).

A request that came through stablemirror mirrors (their Via entries) and carries the header
is spoken for by that chain: the mirror authenticates upstream with its own account, so its
subject would put every node behind it into one cohort. There the header wins.

A mirror forwards the identity it serves: its caller's subject, else the header it got,
else its own node id when the caller is on its own host (loopback: a node cache serving
its host's podman, containerd, ...), else the caller's address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

CLIENT_ID_HEADER = "Stablemirror-Client-Id"
CHANNEL_HEADER = "Stablemirror-Channel"
MAX_IDENTITY = 255


def _clip(value: str) -> str:
    return value.strip()[:MAX_IDENTITY]


def via_mirror(via: str) -> bool:
    """Did the request come through a stablemirror mirror (its Via entry)?"""
    return "(stablemirror)" in via


def client_identity(actor: str | None, client_id: str, address: str, via: str) -> str:
    if client_id and via_mirror(via):
        return _clip(client_id)
    if actor:
        return _clip(actor)
    if client_id:
        return _clip(client_id)
    return _clip(address)


def forwarded_identity(actor: str | None, client_id: str, address: str, node_id: str) -> str:
    if actor:
        return _clip(actor)
    if client_id:
        return _clip(client_id)
    if _is_loopback(address) or not address:
        return _clip(node_id)
    return _clip(address)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def client_address(remote: str, forwarded_for: str, trusted: Sequence[str]) -> str:
    """The client's address: `remote`, or, when `remote` is a trusted proxy, the rightmost
    X-Forwarded-For entry that is not itself a trusted proxy."""
    if not trusted or not forwarded_for:
        return remote
    networks = []
    for cidr in trusted:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in networks)

    if not is_trusted(remote):
        return remote
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else remote
