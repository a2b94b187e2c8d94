"""`p2p:` settings (docs/p2p.md): the edge's metadata and tracker, the node's engine."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, model_validator

KiB, MiB = 1 << 10, 1 << 20


class P2PSettings(BaseModel):
    enabled: bool = Field(
        default=False, description="node: pull blob misses from the cluster's swarm "
        "(`serve --role node --p2p`)")
    listen: str = Field(default="0.0.0.0:6881",
                        description="node: BitTorrent listen address:port")
    cluster: str = Field(default="default", description="node: the cluster it belongs to")
    secret: SecretStr | None = Field(
        default=None, description="node: its cluster's secret; the tracker admits only "
        "credentials made with it")
    clusters: dict[str, SecretStr] = Field(
        default_factory=dict, description="edge/center: cluster name -> secret of the "
        "clusters whose nodes get metadata and the tracker (none: P2P off here)")
    min_piece_bytes: int = Field(default=256 * KiB, ge=16 * KiB,
                                 description="piece size bounds (p2p/pieces.py)")
    max_piece_bytes: int = Field(default=16 * MiB, ge=16 * KiB)
    target_pieces: int = Field(default=500, ge=1, description="pieces per blob, unclamped")
    upload_limit: int = Field(default=0, ge=0, description="node: bytes/s to peers, 0: none")
    download_limit: int = Field(default=0, ge=0,
                                description="node: bytes/s from the swarm, 0: none")
    seed_seconds: float = Field(default=600.0, ge=0,
                                description="node: seed a blob this long after its pull")
    stream_window: int = Field(
        default=4, ge=0, description="node: pieces after the client's read position asked "
        "for first (deadlines); 0: rarest-first only")
    stripes: int = Field(
        default=1, ge=1, le=64, description="node: ask first for the pieces of one stripe "
        "of this many, chosen by node id, so nodes starting together trade; 1: off")
    max_peers: int = Field(default=50, ge=1, description="node: connections per blob")
    no_progress_seconds: float = Field(
        default=10.0, gt=0, description="node: no new verified piece this long (or no "
        "metadata): the rest of the blob comes by plain HTTP from the edge")
    claim_bytes: int = Field(
        default=4 * MiB, ge=16 * KiB, description="edge: about this many bytes (whole "
        "pieces) handed to one node at a time to fetch from the edge (piece hand-out)")
    claim_lease_seconds: float = Field(
        default=30.0, gt=0, description="edge: a node that has not asked again this long "
        "after a hand-out loses it to the next asker")
    claim_stall_seconds: float = Field(
        default=3.0, gt=0, description="node: no new verified piece this long with nothing "
        "handed out: ask the edge for a part the peers did not deliver")
    web_seed_nodes: int = Field(
        default=0, ge=0, description="edge: nodes of a cluster also handed the torrent's "
        "web seed of one blob at a time (for plain BitTorrent clients; 0: none)")
    web_seed_lease_seconds: float = Field(default=60.0, gt=0,
                                          description="edge: how long one hand-out lasts")
    announce_seconds: int = Field(default=5, ge=1,
                                  description="edge: tracker re-announce interval")

    @model_validator(mode="after")
    def _consistent(self) -> P2PSettings:
        for name in ("min_piece_bytes", "max_piece_bytes"):
            value = getattr(self, name)
            if value & (value - 1):
                raise ValueError(f"p2p.{name} {value}: must be a power of two")
        if self.min_piece_bytes > self.max_piece_bytes:
            raise ValueError("p2p.min_piece_bytes is above p2p.max_piece_bytes")
        if self.claim_stall_seconds >= self.no_progress_seconds:
            raise ValueError("p2p.claim_stall_seconds must be below p2p.no_progress_seconds "
                             "(a stalled node asks the edge before it gives up on P2P)")
        if self.enabled and self.secret is None:
            raise ValueError("p2p.enabled needs p2p.secret (the cluster's secret)")
        return self
