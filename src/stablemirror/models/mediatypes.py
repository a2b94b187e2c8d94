"""ModelPack media types and annotations (github.com/modelpack/model-spec), the legacy
`vnd.cnai` spelling of the same spec, and KitOps ModelKit layers (read only).

A layer's media type says two things: what kind of file it holds (weight, weight config,
doc, code, dataset) and how it is packed (`raw`: the file's bytes as they are; `tar`,
`tar+gzip`, `tar+zstd`: an archive of one or more files). `pack` writes raw layers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["weight", "weight.config", "doc", "code", "dataset"]
Packing = Literal["raw", "tar", "tar+gzip", "tar+zstd"]
KINDS: tuple[Kind, ...] = ("weight", "weight.config", "doc", "code", "dataset")

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
LEGACY_ARTIFACT_TYPE = "application/vnd.cnai.model.manifest.v1+json"
LEGACY_CONFIG_TYPE = "application/vnd.cnai.model.config.v1+json"
KITOPS_CONFIG_TYPE = "application/vnd.kitops.modelkit.config.v1+json"
KITOPS_ARTIFACT_TYPE = "application/vnd.kitops.modelkit.manifest.v1+json"

FILEPATH = "org.cncf.model.filepath"
LEGACY_FILEPATH = "org.cnai.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
MEDIATYPE_UNTESTED = "org.cncf.model.file.mediatype.untested"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
# Where a layer says its path, most specific first; the title is what oras writes.
PATH_ANNOTATIONS = (FILEPATH, LEGACY_FILEPATH, TITLE)

MODEL_ARTIFACT_TYPES = frozenset({ARTIFACT_TYPE, LEGACY_ARTIFACT_TYPE, KITOPS_ARTIFACT_TYPE})
MODEL_CONFIG_TYPES = frozenset({CONFIG_TYPE, LEGACY_CONFIG_TYPE, KITOPS_CONFIG_TYPE})
# KitOps layer kinds, as ModelPack kinds ("modelpart" and "prompts" are its extras).
_KITOPS_KINDS: dict[str, Kind] = {"model": "weight", "modelpart": "weight.config",
                                  "docs": "doc", "code": "code", "dataset": "dataset",
                                  "prompts": "doc"}
_PACKINGS: tuple[Packing, ...] = ("raw", "tar", "tar+gzip", "tar+zstd")


@dataclass(frozen=True, slots=True)
class LayerType:
    kind: Kind
    packing: Packing


def layer_media_type(kind: Kind, packing: Packing = "raw") -> str:
    return f"application/vnd.cncf.model.{kind}.v1.{packing}"


def _cncf_table(vendor: str) -> dict[str, LayerType]:
    return {f"application/vnd.{vendor}.model.{kind}.v1.{packing}": LayerType(kind, packing)
            for kind in KINDS for packing in _PACKINGS}


def _kitops_table() -> dict[str, LayerType]:
    table = {}
    for name, kind in _KITOPS_KINDS.items():
        for packing in _PACKINGS[1:]:
            table[f"application/vnd.kitops.modelkit.{name}.v1.{packing}"] = LayerType(
                kind, packing)
    return table


LAYER_TYPES: dict[str, LayerType] = {**_cncf_table("cncf"), **_cncf_table("cnai"),
                                     **_kitops_table()}


def layer_type(media_type: str) -> LayerType | None:
    """The kind and packing of a model layer; None for a media type that is not one."""
    return LAYER_TYPES.get(media_type)
