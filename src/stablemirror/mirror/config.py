"""Settings of the pull-through mirror: namespaces, upstream groups, cache bounds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class UpstreamSettings(BaseModel):
    url: str = Field(description="base URL, e.g. https://registry-1.docker.io")
    prefix: str = Field(default="", description="upstream namespace prefix, e.g. 'library/'")
    username: str | None = None
    password: str | None = None
    weight: int = Field(default=1, ge=1)
    backup: bool = Field(default=False, description="used only when every primary is down")
    max_fails: int = Field(default=3, ge=1, description="failures within fail_timeout => down")
    fail_timeout: float = Field(default=10.0, gt=0, description="seconds an upstream stays down")


class UpstreamGroupSettings(BaseModel):
    upstreams: list[UpstreamSettings]
    health_check_interval: float = Field(default=10.0, ge=0, description="0 disables")
    connect_timeout: float = Field(default=3.0, gt=0)
    first_byte_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=15.0, gt=0, description="longest silence mid-body")
    max_attempts: int = Field(default=0, ge=0, description="0 = 2 per upstream, plus one")


class NamespaceSettings(BaseModel):
    prefix: str = Field(default="", description="repository prefix; '' matches everything")
    mode: Literal["hosted", "proxy", "both"] = "proxy"
    upstream_group: str | None = None
    strip_prefix: bool = Field(default=True, description="drop `prefix` before asking upstream")
    tag_ttl: float = Field(default=0.0, ge=0,
                           description="seconds a tag is trusted unchecked; 0 (default) "
                                       "revalidates every pull with one HEAD")
    stale_if_error: bool = True
    stale_while_revalidate: bool = False
    negative_ttl: float = Field(default=15.0, ge=0, description="seconds a 404 is remembered")


class CacheSettings(BaseModel):
    max_bytes: int | None = Field(default=None, ge=0, description="LRU-evict proxied blobs above")
    inactive_seconds: float | None = Field(default=None, gt=0,
                                           description="evict what was not pulled for this long")
    pinned: list[str] = Field(default_factory=list,
                              description="repository patterns (fnmatch) never evicted")
    in_use_seconds: float = Field(default=900.0, ge=0,
                                  description="blobs pulled this recently are never evicted")
    evict_interval_seconds: float = Field(default=60.0, gt=0)


class ReplicaSettings(BaseModel):
    """Replicas of one mirror behind a load balancer, sharing one index (docs/mirror.md,
    "Replicas"): one upstream transfer per blob across all of them."""

    advertise_url: str | None = Field(
        default=None, description="how the other replicas reach this one, e.g. "
                                  "http://10.0.0.5:5000; unset = no cross-replica fetches")
    secret: str | None = Field(default=None, min_length=16,
                               description="shared by all replicas; signs internal requests")
    lease_seconds: float = Field(default=15.0, gt=0,
                                 description="a fetch lease lapses this long after its "
                                             "owner stopped extending it")
    ask_owner_seconds: float = Field(default=300.0, ge=0,
                                     description="after a transfer, others ask its owner "
                                                 "this long before going upstream")

    @property
    def enabled(self) -> bool:
        return self.advertise_url is not None and self.secret is not None


class MirrorSettings(BaseModel):
    node_id: str | None = Field(default=None, description="name in Via headers; default random")
    replicas: ReplicaSettings = Field(default_factory=ReplicaSettings)
    upstream_groups: dict[str, UpstreamGroupSettings] = Field(default_factory=dict)
    namespaces: list[NamespaceSettings] = Field(default_factory=list)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    delta: bool = Field(default=True, description="fetch weight layers by delta when a chunk "
                        "index exists upstream (docs/delta.md)")

    def effective(
        self, quick_upstreams: list[str]
    ) -> tuple[dict[str, UpstreamGroupSettings], list[NamespaceSettings]]:
        """Groups and namespaces with the `--upstream URL...` quick form folded in."""
        groups = dict(self.upstream_groups)
        namespaces = list(self.namespaces)
        if quick_upstreams:
            groups["default"] = UpstreamGroupSettings(upstreams=[
                UpstreamSettings(url=url, backup=i > 0) for i, url in enumerate(quick_upstreams)])
            if not any(ns.prefix == "" for ns in namespaces):
                namespaces.append(NamespaceSettings(prefix="", mode="proxy",
                                                    upstream_group="default"))
        return groups, namespaces
