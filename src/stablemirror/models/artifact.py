"""The ModelPack config and manifest (pure), byte for byte the same for the same inputs.

Canonical JSON: keys sorted, no insignificant whitespace, UTF-8. Layers in the order of
their paths (sorted by their UTF-8 bytes). Nothing of the machine leaks in: no timestamps
unless given (`created`), file metadata with mode 0644, uid/gid 0 and the created time (or
the epoch) as mtime, whatever the file's mode, owner and mtime on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from stablemirror.models import mediatypes as mmt
from stablemirror.models.mediatypes import Kind
from stablemirror.models.weights import WeightInfo, param_size, precision_of
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest

EPOCH = "1970-01-01T00:00:00Z"


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class PackedFile:
    path: str  # relative, POSIX separators
    kind: Kind
    digest: Digest
    size: int
    untested: bool = False
    weight: WeightInfo | None = None


@dataclass(frozen=True)
class ModelMeta:
    """What the config's descriptor says, and config fields that override what the files
    tell (None: derive it, or leave it out)."""

    name: str | None = None
    family: str | None = None
    version: str | None = None
    title: str | None = None
    description: str | None = None
    vendor: str | None = None
    revision: str | None = None
    doc_url: str | None = None
    source_url: str | None = None
    created: str | None = None
    authors: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()
    architecture: str | None = None
    format: str | None = None
    param_size: str | None = None
    precision: str | None = None
    quantization: str | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass(frozen=True, slots=True)
class ConfigHints:
    """What small config files said: config.json's model_type and quantization method."""

    model_type: str | None = None
    quant_method: str | None = None


def hints_from_config_json(raw: bytes) -> ConfigHints:
    try:
        doc = json.loads(raw)
    except ValueError:
        return ConfigHints()
    if not isinstance(doc, dict):
        return ConfigHints()
    quant = doc.get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    model_type = doc.get("model_type")
    return ConfigHints(model_type if isinstance(model_type, str) else None,
                       method if isinstance(method, str) else None)


def derived_config(files: list[PackedFile], hints: ConfigHints) -> dict[str, str]:
    """format, paramSize, precision, quantization as the weight files tell them."""
    infos = [f.weight for f in files if f.weight is not None]
    out: dict[str, str] = {}
    formats = sorted({i.format for i in infos})
    if formats:
        out["format"] = ",".join(formats)
    counted = [i.parameters for i in infos if i.parameters is not None]
    if counted:
        out["paramSize"] = param_size(sum(counted))
    precision = precision_of({d for i in infos for d in i.dtypes})
    if precision:
        out["precision"] = precision
    quants = sorted({i.quantization for i in infos if i.quantization})
    if hints.quant_method:
        quants = [hints.quant_method]
    if quants:
        out["quantization"] = ",".join(quants)
    return out


def _family(files: list[PackedFile], hints: ConfigHints) -> str | None:
    for f in files:
        if f.weight is not None and f.weight.architecture:
            return f.weight.architecture
    return hints.model_type


def build_config(meta: ModelMeta, files: list[PackedFile], hints: ConfigHints) -> bytes:
    descriptor = {
        "name": meta.name, "family": meta.family or _family(files, hints),
        "version": meta.version, "title": meta.title, "description": meta.description,
        "vendor": meta.vendor, "revision": meta.revision, "docURL": meta.doc_url,
        "sourceURL": meta.source_url, "createdAt": meta.created,
        "authors": list(meta.authors) or None, "licenses": list(meta.licenses) or None,
    }
    config: dict[str, Any] = derived_config(files, hints)
    given = {"architecture": meta.architecture, "format": meta.format,
             "paramSize": meta.param_size, "precision": meta.precision,
             "quantization": meta.quantization}
    config.update({k: v for k, v in given.items() if v is not None})
    if meta.capabilities:
        config["capabilities"] = meta.capabilities
    doc = {
        "descriptor": {k: v for k, v in descriptor.items() if v is not None},
        "config": config,
        "modelfs": {"type": "layers", "diffIds": [str(f.digest) for f in files]},
    }
    return canonical_json(doc)


def layer_descriptor(f: PackedFile, created: str | None) -> dict[str, Any]:
    metadata = {"name": f.path, "mode": 0o644, "uid": 0, "gid": 0, "size": f.size,
                "mtime": created or EPOCH, "typeflag": 48}  # '0': a regular file
    annotations = {mmt.FILEPATH: f.path, mmt.TITLE: f.path,
                   mmt.FILE_METADATA: canonical_json(metadata).decode("utf-8"),
                   mmt.MEDIATYPE_UNTESTED: "true" if f.untested else "false"}
    return {"mediaType": mmt.layer_media_type(f.kind), "digest": str(f.digest),
            "size": f.size, "annotations": annotations}


def build_manifest(config: bytes, files: list[PackedFile], created: str | None,
                   annotations: dict[str, str] | None = None) -> bytes:
    notes = dict(annotations or {})
    if created:
        notes[mmt.CREATED] = created
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": mmt.ARTIFACT_TYPE,
        "config": {"mediaType": mmt.CONFIG_TYPE, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [layer_descriptor(f, created) for f in files],
    }
    if notes:
        doc["annotations"] = notes
    return canonical_json(doc)
