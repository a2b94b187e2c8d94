"""The chunk-index referrer (pure): an OCI image manifest whose `subject` is the model
manifest and whose layers are the chunk indexes of its weight layers, one blob each, naming
the layer it indexes in an annotation. Any OCI registry stores and lists it (referrers API).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from stablemirror.delta.format import ChunkIndex
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import Descriptor, Manifest

ARTIFACT_TYPE = "application/vnd.stablemirror.chunk-index.v1"
INDEX_MEDIA_TYPE = "application/vnd.stablemirror.chunk-index.v1.binary"
LAYER_ANNOTATION = "dev.stablemirror.chunk-index.layer"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
MODEL_WEIGHT_PREFIX = "application/vnd.cncf.model.weight."
# Uncompressed weights only: a compressed stream shares no chunks once anything changed.
_COMPRESSED = ("gzip", "zstd", "+gz")
MIN_INDEXED_SIZE = 1 << 20  # below this a whole fetch costs as little as the index


def is_weight_layer(d: Descriptor) -> bool:
    return (d.media_type.startswith(MODEL_WEIGHT_PREFIX)
            and not any(c in d.media_type for c in _COMPRESSED)
            and d.size >= MIN_INDEXED_SIZE)


def weight_layers(manifest: Manifest) -> list[Descriptor]:
    return [d for d in manifest.blobs if is_weight_layer(d) and d.digest.algorithm == "sha256"]


@dataclass(frozen=True, slots=True)
class IndexReferrer:
    blobs: tuple[tuple[Digest, bytes], ...]  # (digest, content) to upload first
    manifest: bytes
    digest: Digest


def build_referrer(subject_digest: str, subject_media_type: str, subject_size: int,
                   indexes: Sequence[ChunkIndex]) -> IndexReferrer:
    blobs = [(Digest.of(EMPTY_CONFIG), EMPTY_CONFIG)]
    layers = []
    for index in indexes:
        data = index.encode()
        digest = Digest.of(data)
        blobs.append((digest, data))
        layers.append({"mediaType": INDEX_MEDIA_TYPE, "digest": str(digest), "size": len(data),
                       "annotations": {LAYER_ANNOTATION: f"sha256:{index.layer_hex}"}})
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": str(blobs[0][0]), "size": 2},
        "layers": layers,
        "subject": {"mediaType": subject_media_type, "digest": subject_digest,
                    "size": subject_size},
    }
    raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return IndexReferrer(tuple(blobs), raw, Digest.of(raw))


def index_blob_for(referrer: Manifest, layer: Digest) -> Descriptor | None:
    """The descriptor of `layer`'s chunk index in a parsed referrer manifest, if any."""
    if referrer.artifact_type != ARTIFACT_TYPE:
        return None
    for d in referrer.blobs:
        if (d.media_type == INDEX_MEDIA_TYPE and d.annotations
                and d.annotations.get(LAYER_ANNOTATION) == str(layer)):
            return d
    return None


def referrer_digests(referrers_body: bytes) -> list[str]:
    """Digests of chunk-index referrers in a referrers-API answer (an OCI index)."""
    try:
        doc = json.loads(referrers_body)
        entries = doc.get("manifests", []) if isinstance(doc, dict) else []
    except ValueError:
        return []
    return [m["digest"] for m in entries
            if isinstance(m, dict) and m.get("artifactType") == ARTIFACT_TYPE
            and isinstance(m.get("digest"), str)]
