"""Servers on the S3 backend (a real SeaweedFS), and a look into the bucket.

Replicas are `stablemirror serve` processes with data dirs of their own and one shared
bucket, prefix and index (a SQLite file in a shared directory, `database_url`).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support.live import LiveServer
from tests.support.seaweed import SeaweedS3

BUCKET = "functional"
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass
class S3Cluster:
    """Settings shared by every replica of one registry on S3."""

    seaweed: SeaweedS3
    root: Path
    prefix: str = field(default_factory=lambda: f"reg-{uuid.uuid4().hex[:10]}/")
    extra_env: dict[str, str] = field(default_factory=dict)
    replicas: list[LiveServer] = field(default_factory=list)
    database_url: str | None = None  # default: one SQLite file all replicas open

    @property
    def index_url(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'shared-index.db'}"

    def env(self) -> dict[str, str]:
        return {
            "STABLEMIRROR_STORAGE__BACKEND": "s3",
            "STABLEMIRROR_STORAGE__S3__ENDPOINT": self.seaweed.endpoint,
            "STABLEMIRROR_STORAGE__S3__BUCKET": BUCKET,
            "STABLEMIRROR_STORAGE__S3__PREFIX": self.prefix,
            "STABLEMIRROR_STORAGE__S3__CREATE_BUCKET": "true",
            "STABLEMIRROR_DATABASE_URL": self.index_url,
            **self.extra_env,
        }

    def replica(self, *args: str, workers: int = 1) -> LiveServer:
        d = self.root / f"replica{len(self.replicas)}"
        d.mkdir(parents=True, exist_ok=True)
        server = LiveServer(d, *args, workers=workers, env=self.env())
        server.start()
        self.replicas.append(server)
        return server

    # -- the bucket, read directly ------------------------------------------------------
    def keys(self, under: str = "") -> dict[str, int]:
        """Every key (relative to the prefix) under `under`, with its size."""
        found: dict[str, int] = {}
        token = None
        for _ in range(1000):
            params = {"list-type": "2", "prefix": self.prefix + under}
            if token:
                params["continuation-token"] = token
            r = requests.get(f"{self.seaweed.endpoint}/{BUCKET}", params=params, timeout=10)
            r.raise_for_status()
            doc = ET.fromstring(r.content)
            for item in doc.iter(f"{_NS}Contents"):
                key = item.findtext(f"{_NS}Key") or ""
                found[key[len(self.prefix):]] = int(item.findtext(f"{_NS}Size") or 0)
            if doc.findtext(f"{_NS}IsTruncated") != "true":
                return found
            token = doc.findtext(f"{_NS}NextContinuationToken")
        raise AssertionError("listing did not end")

    def object_url(self, key: str) -> str:
        return f"{self.seaweed.endpoint}/{BUCKET}/{self.prefix}{key}"

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()


@pytest.fixture
def s3_cluster(seaweed: SeaweedS3, tmp_path: Path) -> Iterator[S3Cluster]:
    if seaweed.proc is None:  # a fault test stopped it and failed before restarting
        seaweed.start()
    cluster = S3Cluster(seaweed, tmp_path)
    yield cluster
    cluster.stop()
    if seaweed.proc is None:
        seaweed.start()


ReplicaFactory = Callable[..., LiveServer]


def blob_key(digest: str) -> str:
    algorithm, _, hex_ = digest.partition(":")
    return f"blobs/{algorithm}/{hex_}"
