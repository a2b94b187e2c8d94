"""Manifest parsing and validation (pure): what a manifest is and what it references."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import DigestInvalid, ManifestInvalid, ManifestTooLarge
from stablemirror.oci.strict_json import JsonRejected, load_json

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Real manifests nest 4-5 levels (index > descriptor > platform > os.features); 64 leaves room
# for extension fields and keeps json.loads far from Python's recursion limit.
MAX_JSON_DEPTH = 64
MAX_SIZE = 2**63 - 1  # descriptor sizes are int64 in the image spec


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest; `raw` is kept byte for byte, as pushed."""

    raw: bytes
    digest: Digest
    media_type: str
    blobs: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    config_media_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def effective_artifact_type(self) -> str | None:
        """What the referrers API reports: artifactType, else the config media type."""
        if self.artifact_type:
            return self.artifact_type
        if self.config_media_type and self.config_media_type != mt.OCI_EMPTY:
            return self.config_media_type
        return self.config_media_type if self.media_type in mt.IMAGE_MANIFESTS else None


def _type_text(value: str, where: str) -> str:
    """A media type or artifact type: kept in index columns and sent back in responses, so
    no control characters (RFC 6838 allows none; PostgreSQL text cannot hold a NUL)."""
    if any(c < " " or c == "\x7f" for c in value):
        raise ManifestInvalid(field=where, reason="control character in a media type")
    return value


def _annotations(obj: Any, where: str) -> dict[str, str] | None:
    """The image spec: annotations are a map of string to string (absent or null: none)."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ManifestInvalid(field=where, reason="must be an object")
    for key, value in obj.items():
        if not isinstance(value, str):
            raise ManifestInvalid(field=f"{where}.{key}", reason="annotation values are strings")
    return obj


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestInvalid(field=where, reason="descriptor must be an object")
    media_type = obj.get("mediaType")
    digest = obj.get("digest")
    size = obj.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(field=f"{where}.mediaType", reason="missing")
    _type_text(media_type, f"{where}.mediaType")
    if not isinstance(digest, str):
        raise ManifestInvalid(field=f"{where}.digest", reason="missing")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise ManifestInvalid(field=f"{where}.size", reason="must be an integer in 0..2^63-1")
    try:
        parsed = Digest.parse(digest)
    except DigestInvalid as e:
        raise ManifestInvalid(field=f"{where}.digest", reason="malformed digest") from e
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(field=f"{where}.artifactType", reason="must be a string")
    if artifact_type is not None:
        _type_text(artifact_type, f"{where}.artifactType")
    platform = obj.get("platform")
    return Descriptor(
        media_type,
        parsed,
        size,
        artifact_type,
        _annotations(obj.get("annotations"), f"{where}.annotations"),
        platform if isinstance(platform, dict) else None,
    )


def _subject(obj: Any) -> Descriptor | None:
    """A descriptor of another manifest (image spec); it need not exist here yet
    (distribution spec), but it must be a well-formed descriptor of a manifest type."""
    if obj is None:
        return None
    subject = _descriptor(obj, "subject")
    if subject.media_type not in mt.MANIFESTS:
        raise ManifestInvalid(field="subject.mediaType", reason="not a manifest media type",
                              media_type=subject.media_type)
    return subject


def _is_foreign(d: Descriptor) -> bool:
    # Foreign / non-distributable layers live elsewhere (urls); registries need not hold them.
    return "foreign" in d.media_type or "nondistributable" in d.media_type


def resolve_media_type(body: dict[str, Any], content_type: str) -> str:
    """The manifest's type: its `mediaType` field, else the request's Content-Type."""
    declared = body.get("mediaType")
    content_type = content_type.split(";")[0].strip()
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid(field="mediaType", reason="must be a string")
    if declared:
        if content_type not in mt.GENERIC_CONTENT_TYPES and content_type != declared:
            raise ManifestInvalid(
                field="mediaType",
                reason="differs from Content-Type",
                media_type=declared,
                content_type=content_type,
            )
        return declared
    if content_type in mt.MANIFESTS:
        return content_type
    # No declared type: infer from shape, as the image spec permits for OCI types.
    if "manifests" in body:
        return mt.OCI_INDEX
    if "config" in body or "layers" in body:
        return mt.OCI_MANIFEST
    raise ManifestInvalid(reason="cannot determine manifest media type")


def parse_manifest(raw: bytes, content_type: str, algorithm: str = "sha256") -> Manifest:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(size=len(raw), limit=MAX_MANIFEST_BYTES)
    try:
        body = load_json(raw, MAX_JSON_DEPTH)
    except JsonRejected as e:
        raise ManifestInvalid(reason=e.reason) from e
    if not isinstance(body, dict):
        raise ManifestInvalid(reason="manifest must be a JSON object")
    if body.get("schemaVersion") != 2:
        raise ManifestInvalid(field="schemaVersion", reason="must be 2")
    media_type = resolve_media_type(body, content_type)
    if media_type not in mt.MANIFESTS:
        raise ManifestInvalid(
            field="mediaType", reason="unsupported manifest type", media_type=media_type
        )
    digest = Digest.of(raw, algorithm)
    subject = _subject(body.get("subject"))
    artifact_type = body.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(field="artifactType", reason="must be a string")
    if artifact_type is not None:
        _type_text(artifact_type, "artifactType")
    annotations = _annotations(body.get("annotations"), "annotations") or {}

    if media_type in mt.INDEXES:
        entries = body.get("manifests")
        if not isinstance(entries, list):
            raise ManifestInvalid(field="manifests", reason="must be a list")
        children = tuple(_descriptor(m, f"manifests[{i}]") for i, m in enumerate(entries))
        return Manifest(
            raw,
            digest,
            media_type,
            children=children,
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )

    config = _descriptor(body.get("config"), "config")
    layers_raw = body.get("layers")
    if not isinstance(layers_raw, list):
        raise ManifestInvalid(field="layers", reason="must be a list")
    layers = [_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers_raw)]
    blobs = (config, *(d for d in layers if not _is_foreign(d)))
    return Manifest(
        raw,
        digest,
        media_type,
        blobs=blobs,
        subject=subject,
        artifact_type=artifact_type,
        config_media_type=config.media_type,
        annotations=annotations,
    )
