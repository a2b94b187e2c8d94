"""Torrent metadata of a stored blob, made once by the tier that holds it (edge or center).

A hybrid BitTorrent v1+v2 torrent (v2: SHA-256 Merkle piece hashes; v1 for peers without
v2), private (no DHT, no PEX: peers come from our tracker only), of one file named by the
blob's hex digest, so a published blob file (`blobs/sha256/ab/<hex>`) can be seeded where it
lies. The info dictionary is hashed from the stored file once and cached under
`<data>/p2p/torrents/` (files/create_once.py: workers racing make one); the tracker URL and
the web seed (outside the info dictionary, so they do not change the info hash) are added
per request. Both info hashes (v1, truncated v2: what libtorrent announces) are recorded so
the tracker only tracks torrents this tier made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from stablemirror.files.create_once import create_once
from stablemirror.p2p.pieces import piece_size


class TorrentCache:
    def __init__(self, directory: Path, low: int, high: int, target: int) -> None:
        self.directory = directory
        self.low = low
        self.high = high
        self.target = target
        self._piece_lengths: dict[str, int] = {}  # of torrents made here, read once

    def path(self, hex_digest: str) -> Path:
        return self.directory / f"{hex_digest}.torrent"

    def get(self, hex_digest: str, blob: Path) -> bytes:
        """The cached torrent of the blob at `blob` (blocking: call in a thread)."""
        data = create_once(self.path(hex_digest), lambda: make_torrent(blob, self.low,
                                                                        self.high, self.target),
                           mode=0o644)
        for h in info_hashes(data):
            marker = self.directory / "hashes" / h
            if not marker.exists():
                create_once(marker, hex_digest.encode, mode=0o644)
        return data

    def piece_length(self, hex_digest: str) -> int | None:
        """The piece length of the blob's torrent, if one was made here (blocking)."""
        known = self._piece_lengths.get(hex_digest)
        if known is None:
            try:
                data = self.path(hex_digest).read_bytes()
            except FileNotFoundError:
                return None
            known = piece_length(data)
            if len(self._piece_lengths) >= 4096:  # bounded: one entry per blob
                self._piece_lengths.clear()
            self._piece_lengths[hex_digest] = known
        return known

    def known(self, info_hash_hex: str) -> bool:
        return len(info_hash_hex) == 40 and (self.directory / "hashes" / info_hash_hex).exists()


# libtorrent is imported in each function: an edge or center loads it (~MiBs of C++) on its
# first torrent request, not at start-up (docs/footprint.md).


def make_torrent(blob: Path, low: int, high: int, target: int) -> bytes:
    import libtorrent as lt

    size = blob.stat().st_size
    files = lt.file_storage()
    files.add_file(blob.name, size)
    creator = lt.create_torrent(files, piece_size(size, low, high, target))
    creator.set_priv(True)
    creator.set_creator("stablemirror")
    lt.set_piece_hashes(creator, str(blob.parent))
    return lt.bencode(creator.generate())


def info_hashes(torrent: bytes) -> list[str]:
    import libtorrent as lt

    hashes = lt.torrent_info(torrent).info_hashes()
    found = []
    if hashes.has_v1():
        found.append(str(hashes.v1))
    if hashes.has_v2():
        found.append(str(hashes.v2)[:40])
    return found


def piece_length(torrent: bytes) -> int:
    import libtorrent as lt

    decoded = cast(dict[bytes, Any], lt.bdecode(torrent))
    return int(decoded[b"info"][b"piece length"])


def with_endpoints(torrent: bytes, announce: str, web_seed: str | None) -> bytes:
    """The torrent as served: our tracker, and the web seed if this node is handed one."""
    import libtorrent as lt

    decoded = cast(dict[bytes, Any], lt.bdecode(torrent))
    decoded[b"announce"] = announce.encode()
    decoded.pop(b"url-list", None)
    if web_seed is not None:
        decoded[b"url-list"] = web_seed.encode()
    return lt.bencode(decoded)
