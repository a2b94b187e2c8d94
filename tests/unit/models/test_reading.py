from __future__ import annotations

import json
from typing import Any

import pytest

from stablemirror.models.paths import UnsafePath
from stablemirror.models.reading import NotAModel, model_layers, selected
from stablemirror.oci.digest import Digest

D = str(Digest.of(b"x"))


def manifest(layers: list[dict[str, Any]], artifact_type: str | None =
             "application/vnd.cncf.model.manifest.v1+json",
             config_type: str = "application/vnd.cncf.model.config.v1+json") -> bytes:
    doc: dict[str, Any] = {"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": config_type, "digest": D, "size": 1},
                           "layers": layers}
    if artifact_type:
        doc["artifactType"] = artifact_type
    return json.dumps(doc).encode()


def raw(path: str, key: str = "org.cncf.model.filepath",
        media_type: str = "application/vnd.cncf.model.weight.v1.raw") -> dict[str, Any]:
    return {"mediaType": media_type, "digest": D, "size": 1, "annotations": {key: path}}


@pytest.mark.parametrize("path", ["../../etc/cron.d/x", "/etc/passwd", "a/../../b",
                                  "a\\..\\b", "", "a//b", "x\x00y"])
def test_hostile_annotations_are_refused_before_anything_is_fetched(path: str) -> None:
    with pytest.raises(UnsafePath):
        model_layers(manifest([raw("ok.json"), raw(path)]))


def test_duplicate_and_colliding_paths_are_refused() -> None:
    with pytest.raises(UnsafePath, match="named twice"):
        model_layers(manifest([raw("a"), raw("a")]))
    with pytest.raises(UnsafePath):
        model_layers(manifest([raw("a"), raw("a/b")]))


def test_legacy_cnai_and_oras_title_paths_are_read() -> None:
    layers = model_layers(manifest(
        [raw("w.bin", "org.cnai.model.filepath", "application/vnd.cnai.model.weight.v1.raw"),
         raw("doc.md", "org.opencontainers.image.title", "text/markdown")],
        artifact_type="application/vnd.cnai.model.manifest.v1+json"))
    assert [(x.path, x.kind, x.packing) for x in layers] == [
        ("w.bin", "weight", "raw"), ("doc.md", None, "raw")]


def test_kitops_modelkits_are_read_by_their_config_type() -> None:
    layers = model_layers(manifest(
        [{"mediaType": "application/vnd.kitops.modelkit.model.v1.tar+gzip", "digest": D,
          "size": 1}], artifact_type=None,
        config_type="application/vnd.kitops.modelkit.config.v1+json"))
    assert [(x.kind, x.packing, x.path) for x in layers] == [("weight", "tar+gzip", None)]


@pytest.mark.parametrize("doc", [
    manifest([], artifact_type="application/vnd.oci.image.config.v1+json",
             config_type="application/vnd.oci.image.config.v1+json"),
    manifest([{"mediaType": "x/y", "digest": D, "size": 1}]),
    manifest([{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": D,
               "size": 1}]),
    manifest([{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": "md5:1",
               "size": 1, "annotations": {"org.cncf.model.filepath": "a"}}]),
    b'{"layers": [], "layers": []}', b"[]",
])
def test_what_is_not_a_readable_model_is_refused(doc: bytes) -> None:
    with pytest.raises(NotAModel):
        model_layers(doc)


def test_filters_select_by_path() -> None:
    layers = model_layers(manifest([raw("config.json"), raw("sub/tokenizer.json"),
                                    raw("model.safetensors")]))
    assert [x.path for x in selected(layers, ["*.json"])] == ["config.json",
                                                              "sub/tokenizer.json"]
    assert [x.path for x in selected(layers, ["model.*"])] == ["model.safetensors"]
    assert len(selected(layers, [])) == 3
