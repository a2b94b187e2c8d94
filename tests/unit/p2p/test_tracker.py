from __future__ import annotations

import struct
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

import libtorrent as lt
import pytest

from stablemirror.p2p.config import P2PSettings
from stablemirror.p2p.credential import query, sign, verify
from stablemirror.p2p.edge import EdgeSwarms
from stablemirror.p2p.metadata import info_hashes
from stablemirror.p2p.tracker import Announce, AnnounceRefused, Swarms, parse_announce

INFO = bytes(range(20))
SECRETS = {"east": "s3cret", "west": "other"}


def _query(cluster: str = "east", node: str = "n1", secret: str = "s3cret", port: int = 6881,
           left: int = 100, event: str = "started", info: bytes = INFO) -> str:
    return (f"info_hash={quote_from_bytes(info)}&peer_id=-LT-&port={port}&left={left}"
            f"&event={event}&{query(secret, cluster, node)}")


def test_credentials_are_per_cluster_and_node() -> None:
    sig = sign("s3cret", "east", "n1")
    assert verify(SECRETS, "east", "n1", sig)
    assert not verify(SECRETS, "west", "n1", sig)  # another cluster's secret
    assert not verify(SECRETS, "east", "n2", sig)  # another node
    assert not verify(SECRETS, "north", "n1", sign("x", "north", "n1"))  # unknown cluster


def test_announce_parsing_keeps_the_binary_info_hash() -> None:
    a = parse_announce(_query(info=b"\xff%&=+ " + bytes(14)))
    assert a.info_hash == (b"\xff%&=+ " + bytes(14)).hex()
    assert (a.cluster, a.node, a.port, a.left) == ("east", "n1", 6881, 100)
    with pytest.raises(AnnounceRefused):
        parse_announce(_query(info=b"short"))
    with pytest.raises(AnnounceRefused):
        parse_announce(_query(port=0))


def _a(cluster: str, port: int, left: int = 5, event: str = "") -> Announce:
    return Announce(INFO.hex(), cluster, "n", "", port, event, left)


def test_peers_of_the_same_cluster_only_and_never_yourself(tmp_path: Path) -> None:
    s = Swarms(tmp_path, interval=5)
    s.announce(_a("east", 1), "10.0.0.1")
    s.announce(_a("west", 2), "10.0.0.2")
    peers, seeds, leechers = s.announce(_a("east", 3, left=0), "10.0.0.3")
    assert peers == [("10.0.0.1", 1)] and (seeds, leechers) == (1, 1)
    peers, _, _ = s.announce(_a("west", 4), "10.0.0.4")
    assert peers == [("10.0.0.2", 2)]


def test_stopped_and_silent_peers_leave_the_swarm(tmp_path: Path) -> None:
    s = Swarms(tmp_path, interval=5)
    s.announce(_a("east", 1), "10.0.0.1", now=1000.0)  # silent since: expired at 1015
    s.announce(_a("east", 2), "10.0.0.2")
    s.announce(_a("east", 2, event="stopped"), "10.0.0.2")
    peers, _, _ = s.announce(_a("east", 3), "10.0.0.3")
    assert peers == []
    assert s.swarm_size(INFO.hex(), "east") == 1


def test_web_seed_goes_to_a_bounded_number_of_nodes(tmp_path: Path) -> None:
    s = Swarms(tmp_path, interval=5)
    assert s.take_web_seed("ab", "east", "n1", slots=1, lease_seconds=60)
    assert s.take_web_seed("ab", "east", "n1", slots=1, lease_seconds=60)  # still its lease
    assert not s.take_web_seed("ab", "east", "n2", slots=1, lease_seconds=60)
    assert s.take_web_seed("ab", "west", "n2", slots=1, lease_seconds=60)  # per cluster
    assert s.take_web_seed("ab", "east", "n3", slots=1, lease_seconds=-1)  # n1's expired


def _edge(tmp_path: Path) -> EdgeSwarms:
    return EdgeSwarms(tmp_path, P2PSettings.model_validate(
        {"clusters": SECRETS, "announce_seconds": 7}))


def test_tracker_refuses_without_credential_or_for_unknown_torrents(tmp_path: Path) -> None:
    edge = _edge(tmp_path)
    refused = lt.bdecode(edge.announce(_query(secret="wrong"), "10.0.0.1"))
    assert refused == {b"failure reason": b"no valid node credential"}
    unknown = lt.bdecode(edge.announce(_query(), "10.0.0.1"))
    assert unknown == {b"failure reason": b"unknown torrent"}


def test_tracker_answers_compact_peers_for_its_own_torrents(tmp_path: Path) -> None:
    edge = _edge(tmp_path)
    blob = tmp_path / ("ab" * 32)
    blob.write_bytes(b"x" * 100_000)
    hashes = info_hashes(edge.torrents.get(blob.name, blob))
    info = bytes.fromhex(hashes[0])
    edge.announce(_query(node="n1", port=7001, info=info), "10.0.0.1")
    answer = lt.bdecode(edge.announce(_query(node="n2", port=7002, info=info), "10.0.0.2"))
    assert answer[b"interval"] == 7
    assert answer[b"peers"] == bytes([10, 0, 0, 1]) + struct.pack("!H", 7001)
    other = lt.bdecode(edge.announce(
        _query(cluster="west", secret="other", node="n3", info=info), "10.0.0.3"))
    assert other[b"peers"] == b""


def test_swarms_nobody_announces_to_are_removed(tmp_path: Path) -> None:
    s = Swarms(tmp_path, interval=5)
    s.announce(_a("east", 1), "10.0.0.1", now=1000.0)  # silent since
    s.announce(_a("west", 2), "10.0.0.2")  # alive
    assert s.take_web_seed("ab", "east", "n1", slots=1, lease_seconds=60)
    assert s.remove_idle() == 1
    assert not (tmp_path / INFO.hex() / "east").exists()
    assert s.swarm_size(INFO.hex(), "west") == 1
    lease = tmp_path / "web-seed" / "ab" / "east" / "0"
    assert lease.is_file()  # a lease of today stays
    peers, _, _ = s.announce(_a("east", 3), "10.0.0.3")  # the swarm starts again
    assert peers == [] and s.swarm_size(INFO.hex(), "east") == 1
    assert s.remove_idle(now=time.time() + 2 * 86400) == 3  # a day on: all of it
    assert not lease.exists() and not (tmp_path / "web-seed" / "ab").exists()
