"""A mirror scans what it ingests: a malicious model on a `docker-registry` upstream is
pulled through, scanned before it is served, and refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from tests.support.clients import ReferenceRegistry
from tests.support.mirror_support import running_server
from tests.support.scanning_corpus import malicious_pickle, safetensors, torch_zip
from tests.support.scanning_support import REPORT_TYPE, push_model, referrers
from tests.support.trust_support import ACCEPT, error, get_manifest


def mirror_config(path: Path, upstream: str) -> Path:
    path.write_text(json.dumps({
        "mirror": {
            "upstream_groups": {"main": {"upstreams": [{"url": upstream}],
                                         "health_check_interval": 0}},
            "namespaces": [{"prefix": "hub/", "mode": "proxy", "upstream_group": "main",
                            "tag_ttl": 0}]},
        "scanning": {"policies": [{"pattern": "hub/*", "mode": "enforce"}]}}))
    return path


def test_mirror_refuses_a_malicious_model_from_upstream(reference: ReferenceRegistry,
                                                        tmp_path: Path) -> None:
    evil = push_model(reference.url, "ml/evil", "v1",
                      {"pytorch_model.bin": torch_zip(malicious_pickle("stack_global_memo"))})
    push_model(reference.url, "ml/good", "v1", {"model.safetensors": safetensors()})
    config = mirror_config(tmp_path / "mirror.yml", reference.url)
    with running_server(tmp_path / "data", "--config", str(config)) as mirror:
        r = get_manifest(mirror.url, "hub/ml/evil", "v1")
        assert r.status_code == 403, r.text
        e = error(r)
        assert e["code"] == "DENIED"
        assert "pytorch_model.bin!archive/data.pkl" in str(e["message"])
        assert "os.system" in str(e["message"])
        assert e["detail"]["digest"] == evil  # type: ignore[index]
        assert get_manifest(mirror.url, "hub/ml/evil", evil).status_code == 403
        assert get_manifest(mirror.url, "hub/ml/good", "v1").status_code == 200
        # the blob with the finding is refused too, now that it was analyzed
        layer = json.loads(get_manifest(reference.url, "ml/evil", "v1").content)["layers"][0]
        b = requests.get(f"{mirror.url}/v2/hub/ml/evil/blobs/{layer['digest']}", timeout=30)
        assert b.status_code == 403, b.status_code
        # the report is readable through the mirror's referrers API
        deadline = time.monotonic() + 20
        while not (found := [m for m in referrers(mirror.url, "hub/ml/evil", evil)
                             if m.get("artifactType") == REPORT_TYPE]):
            assert time.monotonic() < deadline, "no scan report among the referrers"
            time.sleep(0.2)
        report = requests.get(f"{mirror.url}/v2/hub/ml/evil/manifests/{found[0]['digest']}",
                              headers={"Accept": ACCEPT}, timeout=30)
        assert report.status_code == 200, report.text
        body = requests.get(f"{mirror.url}/v2/hub/ml/evil/blobs/"
                            f"{report.json()['layers'][0]['digest']}", timeout=30).json()
        assert body["verdict"] == "findings" and body["subject"] == evil
