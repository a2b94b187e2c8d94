"""Client identity for cohorts: subject, Stablemirror-Client-Id, address; what mirrors
forward; X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from stablemirror.releases.identity import client_address, client_identity, forwarded_identity


def test_center_identity_order() -> None:
    assert client_identity("alice", "node-1", "10.0.0.5", "") == "alice"
    assert client_identity(None, "node-1", "10.0.0.5", "") == "node-1"
    assert client_identity(None, "", "10.0.0.5", "") == "10.0.0.5"
    # through a mirror chain, the mirror speaks for its client: its own login would put
    # every node behind it into one cohort
    assert client_identity("robot+edge", "node-1", "10.0.0.5",
                           "1.1 edge-1 (stablemirror)") == "node-1"
    assert client_identity("robot+edge", "", "10.0.0.5",
                           "1.1 edge-1 (stablemirror)") == "robot+edge"
    assert len(client_identity(None, "x" * 1000, "", "")) == 255
    # another kind of proxy in the Via header does not speak for its client
    assert client_identity("alice", "node-1", "10.0.0.5", "1.1 squid") == "alice"


def test_what_a_mirror_forwards() -> None:
    assert forwarded_identity("alice", "node-9", "127.0.0.1", "node-1") == "alice"
    assert forwarded_identity(None, "node-9", "127.0.0.1", "node-1") == "node-9"
    # a node cache serving its own host: the node is the client
    assert forwarded_identity(None, "", "127.0.0.1", "node-1") == "node-1"
    assert forwarded_identity(None, "", "::1", "node-1") == "node-1"
    # an edge serving hosts directly: each host is a client
    assert forwarded_identity(None, "", "10.1.2.3", "edge-1") == "10.1.2.3"


def test_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = ["10.0.0.0/8"]
    assert client_address("10.0.0.2", "192.0.2.7", trusted) == "192.0.2.7"
    assert client_address("10.0.0.2", "192.0.2.7, 10.0.0.3", trusted) == "192.0.2.7"
    assert client_address("10.0.0.2", "198.51.100.1, 192.0.2.7", trusted) == "192.0.2.7"
    assert client_address("203.0.113.9", "192.0.2.7", trusted) == "203.0.113.9"  # spoofed
    assert client_address("10.0.0.2", "192.0.2.7", []) == "10.0.0.2"
    assert client_address("10.0.0.2", "", trusted) == "10.0.0.2"
    assert client_address("10.0.0.2", "10.0.0.9", trusted) == "10.0.0.9"
    assert client_address("10.0.0.2", "192.0.2.7", ["not-a-cidr"]) == "10.0.0.2"
