"""Label values and buckets of every metric (metrics/__init__.py): each label takes values
from a bounded set declared here, checked when recorded."""

from __future__ import annotations

import re
from typing import Literal, get_args

PREFIX = "stablemirror_"
Kind = Literal["manifest", "blob"]
FailureReason = Literal["not_found", "denied", "upstream", "client_abort", "invalid", "error"]
Source = Literal["local", "upstream"]
CacheResult = Literal["hit", "miss", "coalesced", "stale"]
UpstreamResult = Literal["ok", "not_found", "error", "timeout"]
SignatureResult = Literal["ok", "warned", "denied"]
ScrubResult = Literal["ok", "corrupt"]
FoundBy = Literal["scrub", "read"]
ScanResult = Literal["clean", "findings", "failed"]
ScanCategory = Literal["unsafe_code", "malformed", "secret", "vulnerability"]
ScanBlock = Literal["findings", "pending", "failed", "warned"]
TierName = Literal["hot", "cold"]  # store/tiered.py
# Why a weight layer was fetched whole instead of by delta (delta/, mirror/delta_source.py).
DeltaFallback = Literal["no_index", "bad_index", "no_shared_chunks", "no_range",
                        "index_mismatch", "digest_mismatch", "error"]
ChunkOutcome = Literal["reused", "fetched"]
# S3 API calls of the S3 blob store (store/s3_client.py).
S3Operation = Literal["head", "get", "put", "delete", "copy", "list", "create_multipart",
                      "upload_part", "upload_part_copy", "complete_multipart",
                      "abort_multipart", "head_bucket", "create_bucket"]
S3Direction = Literal["sent", "received"]

# From a 304 or a 2 kB manifest (ms) to a multi-GB layer over a slow link (an hour).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Upstream latency is time to response headers, not transfer time.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A label value that names configuration (an upstream, a tier, a replication rule).
_CONFIG_UNSAFE = re.compile(r"[^A-Za-z0-9._:/-]")
# The first component of a repository name (OCI distribution grammar).
NAMESPACE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
OTHER = "_other"  # namespaces beyond the per-process bound
INVALID = "_invalid"  # not a repository name at all
MAX_RELEASE_SERIES = 1000  # (repository, channel, version) per process; then `_other`


KINDS = frozenset(get_args(Kind))
REASONS = frozenset(get_args(FailureReason))
SOURCES = frozenset(get_args(Source))
CACHE_RESULTS = frozenset(get_args(CacheResult))
REPLICA_ROLES = frozenset({"owner", "follower", "fallback"})
UPSTREAM_RESULTS = frozenset(get_args(UpstreamResult))
SIGNATURE_RESULTS = frozenset(get_args(SignatureResult))
SCRUB_RESULTS = frozenset(get_args(ScrubResult))
FOUND_BY = frozenset(get_args(FoundBy))


def check(value: str, allowed: frozenset[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {sorted(allowed)}")
    return value


def config_name(value: str) -> str:
    # Bounded by the configuration already: tidied rather than refused, so recording a
    # metric never fails a request. Credentials in a URL (user:password@) are dropped.
    return _CONFIG_UNSAFE.sub("_", value.rpartition("@")[2])[:100] or "_unnamed"
