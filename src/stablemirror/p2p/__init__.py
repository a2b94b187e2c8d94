"""P2P piece sharing between node caches of one cluster, on libtorrent (docs/p2p.md)."""
