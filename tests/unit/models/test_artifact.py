from __future__ import annotations

import json

from stablemirror.models.artifact import (
    ConfigHints,
    ModelMeta,
    PackedFile,
    build_config,
    build_manifest,
    hints_from_config_json,
)
from stablemirror.models.weights import WeightInfo
from stablemirror.oci.digest import Digest

FILES = [PackedFile("config.json", "weight.config", Digest.of(b"c"), 1),
         PackedFile("model-1.safetensors", "weight", Digest.of(b"w1"), 2, False,
                    WeightInfo("safetensors", 1_000_000, frozenset({"BF16", "I64"}))),
         PackedFile("model-2.safetensors", "weight", Digest.of(b"w2"), 2, False,
                    WeightInfo("safetensors", 500_000, frozenset({"BF16"}))),
         PackedFile("blob.xyz", "weight.config", Digest.of(b"x"), 3, True)]


def test_config_says_what_the_files_tell_and_what_was_given() -> None:
    meta = ModelMeta(name="m", version="1", licenses=("MIT",), precision=None)
    doc = json.loads(build_config(meta, FILES, ConfigHints("llama", "gptq")))
    assert doc["descriptor"] == {"name": "m", "version": "1", "licenses": ["MIT"],
                                 "family": "llama"}
    assert doc["config"] == {"format": "safetensors", "paramSize": "1.5M",
                             "precision": "bf16", "quantization": "gptq"}
    assert doc["modelfs"] == {"type": "layers", "diffIds": [str(f.digest) for f in FILES]}


def test_given_config_fields_override_derived_ones() -> None:
    doc = json.loads(build_config(ModelMeta(precision="fp8", format="x"), FILES,
                                  ConfigHints()))
    assert (doc["config"]["precision"], doc["config"]["format"]) == ("fp8", "x")


def test_manifest_is_canonical_and_names_each_file() -> None:
    config = build_config(ModelMeta(name="m"), FILES, ConfigHints())
    raw = build_manifest(config, FILES, None)
    doc = json.loads(raw)
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert doc["config"] == {"mediaType": "application/vnd.cncf.model.config.v1+json",
                             "digest": str(Digest.of(config)), "size": len(config)}
    assert "annotations" not in doc  # no timestamp unless given
    layer = doc["layers"][1]
    assert layer["mediaType"] == "application/vnd.cncf.model.weight.v1.raw"
    assert layer["annotations"]["org.cncf.model.filepath"] == "model-1.safetensors"
    meta = json.loads(layer["annotations"]["org.cncf.model.file.metadata+json"])
    assert meta == {"name": "model-1.safetensors", "mode": 0o644, "uid": 0, "gid": 0,
                    "size": 2, "mtime": "1970-01-01T00:00:00Z", "typeflag": 48}
    assert doc["layers"][3]["annotations"]["org.cncf.model.file.mediatype.untested"] == "true"


def test_created_goes_into_descriptor_manifest_and_file_times() -> None:
    when = "2025-01-02T03:04:05Z"
    config = build_config(ModelMeta(created=when), FILES, ConfigHints())
    doc = json.loads(build_manifest(config, FILES, when))
    assert json.loads(config)["descriptor"]["createdAt"] == when
    assert doc["annotations"] == {"org.opencontainers.image.created": when}
    assert when in doc["layers"][0]["annotations"]["org.cncf.model.file.metadata+json"]


def test_hints_from_config_json() -> None:
    raw = b'{"model_type": "bert", "quantization_config": {"quant_method": "awq"}}'
    assert hints_from_config_json(raw) == ConfigHints("bert", "awq")
    assert hints_from_config_json(b"[1]") == ConfigHints()
    assert hints_from_config_json(b"{oops") == ConfigHints()
