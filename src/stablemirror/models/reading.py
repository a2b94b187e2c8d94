"""Reading a model artifact's manifest (pure): which layers, what each holds, where it goes.

Read: ModelPack (`vnd.cncf.model`), its legacy spelling (`vnd.cnai.model`) and KitOps
ModelKits (`vnd.kitops.modelkit` config). A raw layer is one file whose path is its
`org.cncf.model.filepath` (or `org.cnai.model.filepath`, or `org.opencontainers.image.title`
as oras writes it); a tar layer is extracted, each member's name its path. Every raw path
is checked (models/paths.py) and all of them together (no path twice, no file where
another needs a directory) before anything is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass

from stablemirror.models import mediatypes as mmt
from stablemirror.models.classify import glob_matches
from stablemirror.models.mediatypes import Kind, Packing
from stablemirror.models.paths import UnsafePath, check_distinct, safe_parts
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import OCIError
from stablemirror.oci.strict_json import JsonRejected, load_json


class NotAModel(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Layer:
    digest: Digest
    size: int
    media_type: str
    kind: Kind | None
    packing: Packing
    path: str | None  # the annotation's path (a raw layer's file; a tar layer's root)

    @property
    def parts(self) -> tuple[str, ...]:
        assert self.path is not None
        return safe_parts(self.path)


def _layer(entry: object) -> Layer:
    if not isinstance(entry, dict):
        raise NotAModel("a layer is not an object")
    media_type, digest, size = entry.get("mediaType"), entry.get("digest"), entry.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or type(size) is not int:
        raise NotAModel("a layer lacks mediaType, digest or size")
    if size < 0:
        raise NotAModel("a layer has a negative size")
    try:
        parsed = Digest.parse(digest)
    except OCIError:
        raise NotAModel(f"a layer has a malformed digest {digest!r}") from None
    notes = entry.get("annotations") or {}
    if not isinstance(notes, dict):
        raise NotAModel("a layer's annotations are not an object")
    path = next((notes[k] for k in mmt.PATH_ANNOTATIONS if k in notes), None)
    if path is not None and not isinstance(path, str):
        raise NotAModel("a layer's path annotation is not a string")
    known = mmt.layer_type(media_type)
    if known is None and path is None:
        raise NotAModel(f"layer {digest} has an unknown media type {media_type!r} and no path")
    kind = known.kind if known else None
    packing: Packing = known.packing if known else "raw"
    return Layer(parsed, size, media_type, kind, packing, path)


def model_layers(manifest: bytes) -> list[Layer]:
    """The layers of a model artifact, every raw path safe and distinct; else NotAModel or
    UnsafePath."""
    try:
        doc = load_json(manifest, max_depth=16)
    except JsonRejected as e:
        raise NotAModel(f"manifest is not strict JSON: {e.reason}") from None
    if not isinstance(doc, dict):
        raise NotAModel("manifest is not a JSON object")
    if doc.get("mediaType") not in (mt.OCI_MANIFEST, None) or "manifests" in doc:
        raise NotAModel(f"not an image manifest ({doc.get('mediaType')!r})")
    config = doc.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if (doc.get("artifactType") not in mmt.MODEL_ARTIFACT_TYPES
            and config_type not in mmt.MODEL_CONFIG_TYPES):
        raise NotAModel(f"not a model artifact (artifactType {doc.get('artifactType')!r}, "
                        f"config {config_type!r})")
    entries = doc.get("layers")
    if not isinstance(entries, list):
        raise NotAModel("manifest has no layers list")
    layers = [_layer(e) for e in entries]
    raw = [layer.path for layer in layers if layer.packing == "raw"]
    if any(p is None for p in raw):
        raise NotAModel("a raw layer has no path annotation")
    # A tar layer's own path is only a label (KitOps writes "." for a whole directory):
    # its members' names are what get written, and they are checked as they are extracted.
    check_distinct(p for p in raw if p is not None)
    return layers


def selected(layers: list[Layer], filters: list[str]) -> list[Layer]:
    """The layers whose path matches a filter glob (all of them without filters); a layer
    without a path matches no filter."""
    if not filters:
        return list(layers)
    return [layer for layer in layers if layer.path is not None
            and any(glob_matches(g, layer.path.removeprefix("./")) for g in filters)]


__all__ = ["Layer", "NotAModel", "UnsafePath", "model_layers", "selected"]
