"""Signatures between replicas: bound to method, path, secret and a time window."""

from __future__ import annotations

from stablemirror.mirror import replica_auth

SECRET = "a-shared-secret-of-some-length"
PATH = "/_replica/v2/models/llm/blobs/sha256:" + "0" * 64


def test_a_fresh_signature_verifies() -> None:
    header = replica_auth.sign(SECRET, "GET", PATH, 1_000_000)
    assert replica_auth.verify(SECRET, "GET", PATH, header, 1_000_030)


def test_anything_else_is_refused() -> None:
    header = replica_auth.sign(SECRET, "GET", PATH, 1_000_000)
    assert not replica_auth.verify("another-secret-entirely", "GET", PATH, header, 1_000_000)
    assert not replica_auth.verify(SECRET, "HEAD", PATH, header, 1_000_000)
    assert not replica_auth.verify(SECRET, "GET", PATH + "0", header, 1_000_000)
    assert not replica_auth.verify(SECRET, "GET", PATH, header, 1_000_000 + 61)  # replayed late
    assert not replica_auth.verify(SECRET, "GET", PATH, header, 1_000_000 - 61)
    stamp_and_mac = header.split(" ", 1)[1]
    for bad in ("", "Bearer x", f"Basic {stamp_and_mac}", "Stablemirror-Replica ",
                "Stablemirror-Replica 1000000", "Stablemirror-Replica x.y",
                "Stablemirror-Replica 1000000." + "0" * 64,
                "Stablemirror-Replica " + "9" * 40 + ".00"):
        assert not replica_auth.verify(SECRET, "GET", PATH, bad, 1_000_000), bad
