"""Settings of scanning: per-namespace policies, pending behaviour, Trivy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from stablemirror.scanning.findings import CATEGORIES

ScanMode = Literal["enforce", "warn", "off"]
PendingMode = Literal["allow", "block"]
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")


class ScanPolicySettings(BaseModel):
    pattern: str = Field(description="repository pattern (fnmatch, `*` crosses `/`)")
    mode: ScanMode = "enforce"
    block_on: list[str] = Field(
        default_factory=lambda: ["unsafe_code", "malformed", "secret"],
        description="finding categories that block a pull: unsafe_code, malformed, secret, "
                    "vulnerability:SEVERITY (that severity or worse)")
    pending: PendingMode = Field(
        default="block", description="a pull before the scan finished: allow, or block "
                                     "(after waiting up to scanning.pending_wait_seconds)")
    allow_globals: list[str] = Field(
        default_factory=list,
        description="extra pickle globals this namespace trusts: module.name or module.*")

    @field_validator("block_on")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        for entry in value:
            category, _, severity = entry.partition(":")
            if category not in CATEGORIES or (severity and severity not in SEVERITIES):
                raise ValueError(f"block_on entry {entry!r}: expected one of "
                                 f"{', '.join(CATEGORIES)} (vulnerability:SEVERITY)")
        return value

    @field_validator("allow_globals")
    @classmethod
    def _dotted(cls, value: list[str]) -> list[str]:
        for entry in value:
            module, _, name = entry.rpartition(".")
            if not module or not name:
                raise ValueError(f"allow_globals entry {entry!r}: expected module.name")
        return value


class ScanningSettings(BaseModel):
    policies: list[ScanPolicySettings] = Field(
        default_factory=list, description="repositories without a policy are not scanned")
    pending_wait_seconds: float = Field(
        default=60.0, ge=0,
        description="how long a pull under `pending: block` waits for a running scan")
    concurrency: int = Field(default=1, ge=1, description="scans at once per process")
    trivy: str | None = Field(
        default=None, description="path of the trivy binary for image SBOM and secret "
                                  "scans; default: `trivy` on PATH, if any")
    trivy_timeout_seconds: float = Field(default=600.0, gt=0)
    trivy_db_repository: str | None = Field(
        default=None, description="Trivy vulnerability database (OCI artifact), e.g. "
                                  "mirrored through stablemirror; unset: no vuln scan")
    exemption_keys: list[str] = Field(
        default_factory=list,
        description="public keys (PEM paths or inline) whose signed exemptions are honoured")
