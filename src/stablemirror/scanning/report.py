"""The scan report as an OCI referrer of the scanned manifest (pure: builds bytes).

The report is a JSON document (documented in docs/scanning.md), the only layer of an
artifact manifest whose `subject` is the scanned manifest, so `GET /v2/<name>/referrers/
<digest>` lists it, any OCI client (oras, crane, regctl) can read it, and replication
copies it with the image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from stablemirror.oci.digest import Digest
from stablemirror.scanning.findings import Finding

REPORT_ARTIFACT_TYPE = "application/vnd.stablemirror.scan.report.v1+json"
SBOM_ARTIFACT_TYPE = "application/vnd.cyclonedx+json"
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
VERDICT_ANNOTATION = "dev.stablemirror.scan.verdict"


@dataclass(frozen=True, slots=True)
class Referrer:
    blobs: tuple[tuple[Digest, bytes], ...]  # (digest, content) to upload first
    manifest: bytes
    digest: Digest


def report_document(subject: str, analyzer: str, findings: Sequence[Finding],
                    finished_at: float) -> bytes:
    doc = {"schema": "stablemirror.scan.report/v1", "subject": subject,
           "analyzer": analyzer, "finished_at": finished_at,
           "verdict": "findings" if findings else "clean",
           "findings": [f.to_json() for f in findings]}
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def referrer(subject_digest: str, subject_media_type: str, subject_size: int,
             layer: bytes, artifact_type: str, annotations: dict[str, str]) -> Referrer:
    config = Digest.of(EMPTY_CONFIG)
    layer_digest = Digest.of(layer)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": str(config), "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": str(layer_digest),
                    "size": len(layer)}],
        "subject": {"mediaType": subject_media_type, "digest": subject_digest,
                    "size": subject_size},
        "annotations": annotations,
    }
    raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return Referrer(((config, EMPTY_CONFIG), (layer_digest, layer)), raw, Digest.of(raw))


def report_referrer(subject_digest: str, subject_media_type: str, subject_size: int,
                    analyzer: str, findings: Sequence[Finding], finished_at: float
                    ) -> Referrer:
    layer = report_document(subject_digest, analyzer, findings, finished_at)
    return referrer(subject_digest, subject_media_type, subject_size, layer,
                    REPORT_ARTIFACT_TYPE,
                    {VERDICT_ANNOTATION: "findings" if findings else "clean",
                     "dev.stablemirror.scan.findings": str(len(findings))})
