"""The hot tier over the S3 store on a real SeaweedFS: a promoted blob costs no S3 request
per GET (`stablemirror_s3_requests_total`) and is still served with SeaweedFS stopped."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from tests.support.oci_http import Api, wait_until
from tests.support.s3_support import S3Cluster
from tests.support.trust_support import metric

MiB = 1 << 20
TIMEOUT = 60


def hot_copy(hot: Path, digest: str) -> Path:
    alg, hex_ = digest.split(":")
    return hot / "blobs" / alg / hex_[:2] / hex_


def get(url: str) -> str:
    r = requests.get(url, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return "sha256:" + hashlib.sha256(r.content).hexdigest()


def test_a_hot_blob_costs_no_s3_request_and_is_served_with_seaweedfs_stopped(
        s3_cluster: S3Cluster, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    s3_cluster.extra_env.update({"STABLEMIRROR_STORAGE__HOT__PATH": str(hot),
                                 "STABLEMIRROR_STORAGE__HOT__PROMOTE_AFTER": "2"})
    server = s3_cluster.replica(workers=2)
    api = Api(server)
    data = os.urandom(6 * MiB + 1)
    digest = api.push_blob("hot/s3", data)
    cold_only = api.push_blob("hot/s3", os.urandom(1000))
    url = f"{server.url}/v2/hot/s3/blobs/{digest}"
    for _ in range(2):
        assert get(url) == digest
    wait_until(lambda: hot_copy(hot, digest).exists(), what="promotion")
    before = metric(server.url, "stablemirror_s3_requests_total")
    assert before > 0
    gets = 8
    for _ in range(gets):
        assert get(url) == digest
    assert requests.head(url, timeout=TIMEOUT).status_code == 200
    assert metric(server.url, "stablemirror_s3_requests_total") == before  # 0 per hot GET

    s3_cluster.seaweed.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(s3_cluster.seaweed.endpoint, timeout=5)
    for _ in range(3):
        assert get(url) == digest  # from the hot dir alone
    r = requests.get(f"{server.url}/v2/hot/s3/blobs/{cold_only}", timeout=TIMEOUT)
    assert r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != cold_only[7:]
    s3_cluster.seaweed.start()
