"""Scanning on a live server: pushes (raw HTTP, oras, skopeo) are scanned after the commit,
results decide manifest GETs per namespace policy, reports are readable as referrers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.clients import ArtifactRegistry
from tests.support.live import LiveServer
from tests.support.mirror_support import running_server
from tests.support.scanning_corpus import (
    benign_files,
    malicious_pickle,
    safetensors,
    state_dict,
    tar_of,
    torch_pickle,
    torch_zip,
)
from tests.support.scanning_support import (
    REPORT_TYPE,
    push_model,
    referrers,
    scanning_config,
)
from tests.support.trust_support import (
    ACCEPT,
    TIMEOUT,
    cli,
    error,
    generate_keys,
    get_manifest,
    metric,
)

POLICIES: list[dict[str, Any]] = [
    {"pattern": "models/*", "mode": "enforce"},
    {"pattern": "warned/*", "mode": "warn"},
    {"pattern": "trusting/*", "mode": "enforce",
     "allow_globals": ["transformers.training_args.TrainingArguments"]},
]


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_keys(tmp_path_factory.mktemp("keys"), "security")["security"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keypair: Path) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("scan")
    pub = keypair.with_suffix(".pub")
    config = scanning_config(root / "config.yaml", POLICIES,
                             scanning={"exemption_keys": [str(pub)]},
                             audit={"enabled": True})
    with running_server(root / "data", "--config", str(config)) as s:
        yield s


def test_malicious_model_is_denied_naming_file_and_finding(server: LiveServer) -> None:
    started = time.monotonic()
    digest = push_model(server.url, "models/evil", "v1",
                        {"pytorch_model.bin": torch_zip(malicious_pickle())})
    assert time.monotonic() - started < 10
    r = get_manifest(server.url, "models/evil", "v1")
    assert r.status_code == 403, r.text
    e = error(r)
    assert e["code"] == "DENIED"
    message = str(e["message"])
    assert "pytorch_model.bin!archive/data.pkl" in message and "posix.system" in message
    detail = e["detail"]
    assert isinstance(detail, dict) and detail["digest"] == digest
    assert detail["findings"][0]["kind"] == "global"
    # by digest too, and the layer blob itself
    assert get_manifest(server.url, "models/evil", digest).status_code == 403
    layer = json.loads(get_manifest(server.url, "models/evil", digest, "HEAD").content or b"{}")
    assert layer == {}  # HEAD is answered, without a body
    assert metric(server.url, "stablemirror_scan_blocked_pulls_total", reason="findings") >= 2


def test_benign_models_are_served(server: LiveServer) -> None:
    files = benign_files()
    picked = {k: files[k] for k in ("pytorch_model.bin", "model.safetensors", "model.gguf",
                                    "state_dict_p2.pkl", "numpy_p2.pkl", "config.json")}
    push_model(server.url, "models/good", "v1", picked)
    r = get_manifest(server.url, "models/good", "v1")
    assert r.status_code == 200, r.text


def test_modelpack_layers_are_scanned(server: LiveServer) -> None:
    push_model(server.url, "models/pack", "evil", {"weights/model.pt": malicious_pickle()},
               modelpack=True)
    push_model(server.url, "models/pack", "good", {"weights/model.safetensors": safetensors()},
               modelpack=True)
    r = get_manifest(server.url, "models/pack", "evil")
    assert r.status_code == 403 and "weights/model.pt" in str(error(r)["message"]), r.text
    assert get_manifest(server.url, "models/pack", "good").status_code == 200


def test_report_is_attached_as_referrer(server: LiveServer) -> None:
    digest = push_model(server.url, "models/reported", "v1", {"m.pkl": malicious_pickle()})
    assert get_manifest(server.url, "models/reported", "v1").status_code == 403
    deadline = time.monotonic() + 20
    while not (found := [m for m in referrers(server.url, "models/reported", digest)
                         if m.get("artifactType") == REPORT_TYPE]):
        assert time.monotonic() < deadline, "no scan report among the referrers"
        time.sleep(0.2)
    report = requests.get(f"{server.url}/v2/models/reported/manifests/{found[0]['digest']}",
                          headers={"Accept": ACCEPT}, timeout=TIMEOUT)
    assert report.status_code == 200  # the report itself is never blocked
    layer = report.json()["layers"][0]
    body = requests.get(f"{server.url}/v2/models/reported/blobs/{layer['digest']}",
                        timeout=TIMEOUT).json()
    assert body["subject"] == digest and body["verdict"] == "findings"
    assert body["findings"][0]["file"] == "m.pkl" and body["findings"][0]["name"] == "system"


def test_warn_serves_and_counts(server: LiveServer) -> None:
    before = metric(server.url, "stablemirror_scan_blocked_pulls_total", reason="warned")
    push_model(server.url, "warned/evil", "v1", {"m.pkl": malicious_pickle()})
    assert get_manifest(server.url, "warned/evil", "v1").status_code == 200
    assert metric(server.url, "stablemirror_scan_blocked_pulls_total",
                  reason="warned") == before + 1


def test_unscanned_namespace_is_not_touched(server: LiveServer) -> None:
    push_model(server.url, "other/evil", "v1", {"m.pkl": malicious_pickle()})
    assert get_manifest(server.url, "other/evil", "v1").status_code == 200


def test_namespace_allowlist(server: LiveServer) -> None:
    args = b"\x80\x02ctransformers.training_args\nTrainingArguments\n)R."
    push_model(server.url, "trusting/a", "v1", {"training_args.bin": args})
    push_model(server.url, "models/a", "v1", {"training_args.bin": args})
    assert get_manifest(server.url, "trusting/a", "v1").status_code == 200
    assert get_manifest(server.url, "models/a", "v1").status_code == 403


def test_oras_push_is_scanned(server: LiveServer, tmp_path: Path) -> None:
    evil = tmp_path / "model.pt"
    evil.write_bytes(torch_zip(malicious_pickle("reduce_ex_p4")))
    good = tmp_path / "weights.safetensors"
    good.write_bytes(safetensors())
    client = ArtifactRegistry(server.host, artifact_type="application/vnd.example.model")
    for tag, f in (("evil", evil), ("good", good)):
        resp = client.push(target=f"{server.host}/models/oras:{tag}", files=[str(f)],
                           disable_path_validation=True, quiet=True)
        assert resp.status_code == 201, resp.text
    r = get_manifest(server.url, "models/oras", "evil")
    assert r.status_code == 403 and "model.pt!archive/data.pkl" in str(error(r)["message"])
    assert get_manifest(server.url, "models/oras", "good").status_code == 200


def _oci_layout(root: Path, files: dict[str, bytes]) -> str:
    """An OCI image layout with one gzip'd tar layer: what skopeo copies from."""
    import gzip
    import hashlib

    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return {"digest": f"sha256:{hexd}", "size": len(data)}

    layer = gzip.compress(tar_of(files))
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_of(files)).hexdigest()]
    }}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **put(layer)}]}).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **put(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return f"oci:{root}:v1"


def test_skopeo_push_of_an_image_with_a_pickle_is_denied(server: LiveServer,
                                                          tmp_path: Path) -> None:
    import subprocess
    for name, files in (("evil", {"app/model.pkl": malicious_pickle()}),
                        ("good", {"app/main.py": b"print('hi')\n"})):
        src = _oci_layout(tmp_path / name, files)
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", src,
                        f"docker://{server.host}/models/image-{name}:v1"],
                       check=True, capture_output=True, timeout=120)
    r = get_manifest(server.url, "models/image-evil", "v1")
    assert r.status_code == 403 and "app/model.pkl" in str(error(r)["message"]), r.text
    assert get_manifest(server.url, "models/image-good", "v1").status_code == 200


def test_signed_exemption_serves_and_is_audited(server: LiveServer, keypair: Path,
                                                tmp_path: Path) -> None:
    digest = push_model(server.url, "models/exempt", "v1", {"m.pkl": malicious_pickle()})
    assert get_manifest(server.url, "models/exempt", "v1").status_code == 403
    stranger = generate_keys(tmp_path, "stranger")["stranger"]
    cli("scan-exempt", f"models/exempt@{digest}", "--key", str(stranger.with_suffix(".key")),
        "--reason", "reviewed", "--data-dir", str(server.data_dir))
    assert get_manifest(server.url, "models/exempt", "v1").status_code == 403  # unknown key
    cli("scan-exempt", f"models/exempt@{digest}", "--key", str(keypair.with_suffix(".key")),
        "--reason", "reviewed by security", "--data-dir", str(server.data_dir))
    assert get_manifest(server.url, "models/exempt", "v1").status_code == 200
    config = str(server.data_dir.parent / "config.yaml")
    cli("scan-exempt", f"models/exempt@{digest}", "--key", str(keypair.with_suffix(".key")),
        "--reason", "recorded again, audited", "--data-dir", str(server.data_dir),
        "--config", config)
    report = json.loads(cli("audit", "report", "--format", "json", "--repo", "models/exempt",
                            "--data-dir", str(server.data_dir)).stdout)
    decisions = [(r["action"], r["result"]) for r in report["records"]
                 if r["action"] in ("manifest.pull.scan", "scan.exemption")]
    assert decisions[:2] == [("manifest.pull.scan", "denied")] * 2, decisions
    assert ("scan.exemption", "ok") in decisions and ("manifest.pull.scan", "ok") in decisions


def test_results_survive_a_restart(server: LiveServer) -> None:
    push_model(server.url, "models/restart", "v1", {"m.pkl": malicious_pickle()})
    assert get_manifest(server.url, "models/restart", "v1").status_code == 403
    scans = metric(server.url, "stablemirror_scans_total")
    server.restart()
    assert get_manifest(server.url, "models/restart", "v1").status_code == 403
    assert metric(server.url, "stablemirror_scans_total") == 0 < scans  # nothing rescanned


def test_cli_scan_file_and_image(server: LiveServer, tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(torch_zip(malicious_pickle()))
    good = tmp_path / "good.pt"
    good.write_bytes(torch_zip(torch_pickle(state_dict)))
    found = cli("scan", str(evil), check=False)
    assert found.returncode == 1 and "posix" in found.stdout and "evil.pt" in found.stdout
    assert cli("scan", str(good)).returncode == 0
    push_model(server.url, "other/cli", "v1", {"weights.bin": malicious_pickle()})
    remote = cli("scan", f"{server.host}/other/cli:v1", check=False)
    assert remote.returncode == 1 and "weights.bin" in remote.stdout, remote.stdout


AWS_KEY = (b"aws_access_key_id = AKIA2E0A8F3B244C9986\n"
           b"aws_secret_access_key = 7oN2zl1xJzRJdmY8Ht/JdzOPfqt6FlmP4hl4TjqK\n")


def test_trivy_secret_scan_and_sbom_of_an_image(server: LiveServer, tmp_path: Path) -> None:
    import subprocess
    for name, files in (("leaky", {"app/creds.txt": AWS_KEY}),
                        ("clean", {"etc/os-release": b"ID=alpine\nVERSION_ID=3.19.0\n",
                                   "lib/apk/db/installed": b"P:musl\nV:1.2.4-r2\nA:x86_64\n\n"})):
        src = _oci_layout(tmp_path / name, files)
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", src,
                        f"docker://{server.host}/models/trivy-{name}:v1"],
                       check=True, capture_output=True, timeout=120)
    r = get_manifest(server.url, "models/trivy-leaky", "v1")
    assert r.status_code == 403, r.text
    message = str(error(r)["message"])
    assert "app/creds.txt" in message and "AWS" in message, message
    r = get_manifest(server.url, "models/trivy-clean", "v1")
    assert r.status_code == 200, r.text
    digest = r.headers["Docker-Content-Digest"]
    deadline = time.monotonic() + 20
    while not (sboms := [m for m in referrers(server.url, "models/trivy-clean", digest)
                         if m.get("artifactType") == "application/vnd.cyclonedx+json"]):
        assert time.monotonic() < deadline, "no SBOM among the referrers"
        time.sleep(0.2)
    manifest = requests.get(f"{server.url}/v2/models/trivy-clean/manifests/{sboms[0]['digest']}",
                            headers={"Accept": ACCEPT}, timeout=TIMEOUT).json()
    sbom = requests.get(f"{server.url}/v2/models/trivy-clean/blobs/"
                        f"{manifest['layers'][0]['digest']}", timeout=TIMEOUT).json()
    assert sbom["bomFormat"] == "CycloneDX"
    assert any(c.get("name") == "musl" for c in sbom.get("components", [])), sbom


def test_a_pending_scan_is_queued_again_at_start(server: LiveServer) -> None:
    import sqlite3
    digest = push_model(server.url, "models/requeue", "v1", {"m.pkl": malicious_pickle()})
    assert get_manifest(server.url, "models/requeue", "v1").status_code == 403
    server.stop()
    with sqlite3.connect(server.data_dir / "index.db") as db:  # as if killed mid-scan
        db.execute("UPDATE scan_manifests SET status='pending', findings='[]', "
                   "claimed_at=NULL WHERE repository='models/requeue'")
    server.start()
    deadline = time.monotonic() + 30
    while True:  # no pull: the server itself picks the pending scan up
        with sqlite3.connect(server.data_dir / "index.db") as db:
            status = db.execute("SELECT status FROM scan_manifests WHERE repository="
                                "'models/requeue' AND digest=?", (digest,)).fetchone()[0]
        if status == "done":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert metric(server.url, "stablemirror_scans_total", result="findings") == 1
    assert get_manifest(server.url, "models/requeue", "v1").status_code == 403


def test_two_workers_agree(tmp_path: Path) -> None:
    """Scans run in whichever worker took the push; a pull in the other waits for it."""
    config = scanning_config(tmp_path / "config.yaml", POLICIES)
    with running_server(tmp_path / "data", "--config", str(config), workers=2) as s:
        for i in range(4):
            push_model(s.url, f"models/w{i}", "evil", {"m.pkl": malicious_pickle()})
            push_model(s.url, f"models/w{i}", "good", {"m.safetensors": safetensors()})
            for _ in range(3):  # new connections: either worker may answer
                assert get_manifest(s.url, f"models/w{i}", "evil").status_code == 403
                assert get_manifest(s.url, f"models/w{i}", "good").status_code == 200
        assert metric(s.url, "stablemirror_scans_total") == 8  # each manifest scanned once


def test_artifact_media_types_do_not_exempt(server: LiveServer) -> None:
    """A pickle pushed as an 'attestation' layer is still a pickle."""
    from tests.support.scanning_support import push_blob
    from tests.support.trust_support import push_manifest
    evil = malicious_pickle()
    config = b"{}"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.in-toto+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": push_blob(server.url, "models/disguised", config), "size": 2},
        "layers": [{"mediaType": "application/vnd.in-toto+json",
                    "digest": push_blob(server.url, "models/disguised", evil),
                    "size": len(evil)}]}).encode()
    push_manifest(server.url, "models/disguised", "v1", manifest)
    r = get_manifest(server.url, "models/disguised", "v1")
    assert r.status_code == 403, r.text
