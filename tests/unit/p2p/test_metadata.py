from __future__ import annotations

import hashlib
import os
from pathlib import Path

import libtorrent as lt

from stablemirror.p2p.metadata import TorrentCache, info_hashes, with_endpoints

KiB = 1 << 10


def _blob(tmp_path: Path, size: int) -> Path:
    data = os.urandom(size)
    path = tmp_path / "blobs" / hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_hybrid_private_torrent_of_one_file_named_by_digest(tmp_path: Path) -> None:
    blob = _blob(tmp_path, 3 * 256 * KiB + 17)
    data = TorrentCache(tmp_path / "t", 256 * KiB, 1 << 24, 500).get(blob.name, blob)
    ti = lt.torrent_info(data)
    assert ti.priv()
    assert ti.info_hashes().has_v1() and ti.info_hashes().has_v2()
    assert ti.piece_length() == 256 * KiB and ti.num_pieces() == 4
    assert ti.files().file_name(0) == blob.name and ti.total_size() == blob.stat().st_size


def test_made_once_and_cached(tmp_path: Path) -> None:
    blob = _blob(tmp_path, 100 * KiB)
    cache = TorrentCache(tmp_path / "t", 16 * KiB, 1 << 24, 500)
    first = cache.get(blob.name, blob)
    blob.write_bytes(b"changed")  # a second call must not hash again
    assert cache.get(blob.name, blob) == first
    assert all(cache.known(h) for h in info_hashes(first))
    assert not cache.known("00" * 20)


def test_tracker_and_web_seed_do_not_change_the_info_hash(tmp_path: Path) -> None:
    blob = _blob(tmp_path, 100 * KiB)
    plain = TorrentCache(tmp_path / "t", 16 * KiB, 1 << 24, 500).get(blob.name, blob)
    served = with_endpoints(plain, "http://e/p2p/announce", "http://e/v2/r/blobs/x")
    ti = lt.torrent_info(served)
    assert [w["url"] for w in ti.web_seeds()] == ["http://e/v2/r/blobs/x"]
    assert [t.url for t in ti.trackers()] == ["http://e/p2p/announce"]
    assert info_hashes(served) == info_hashes(plain)
    assert lt.torrent_info(with_endpoints(plain, "http://e/a", None)).web_seeds() == []
