"""Settings of integrity and trust: verified reads, scrub, signing policies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

VerifyMode = Literal["never", "first", "always"]
PolicyMode = Literal["enforce", "warn", "off"]


class ScrubSettings(BaseModel):
    interval_seconds: float = Field(
        default=0.0, ge=0, description="background scrub pass every N seconds; 0 = off")
    rate_bytes_per_second: int = Field(
        default=64 * 1024 * 1024, ge=0, description="I/O budget of scrub; 0 = unlimited")
    reverify_after_seconds: float = Field(
        default=7 * 86400.0, ge=0, description="background scrub skips blobs verified since")


class IntegritySettings(BaseModel):
    verify_on_read: VerifyMode = Field(
        default="never", description="hash blobs while serving them: never | first | always")
    namespaces: dict[str, VerifyMode] = Field(
        default_factory=dict,
        description="repository prefix -> verify_on_read; the longest matching prefix wins")
    scrub: ScrubSettings = Field(default_factory=ScrubSettings)


class PolicySettings(BaseModel):
    pattern: str = Field(description="repository pattern (fnmatch), e.g. 'models/*'")
    mode: PolicyMode = "enforce"
    require: dict[str, list[str]] = Field(
        description="role -> public keys (PEM file paths or inline PEM); one valid "
                    "signature by any key of each role is required")


class TrustSettings(BaseModel):
    policies: list[PolicySettings] = Field(
        default_factory=list,
        description="policies from the config file; `stablemirror trust set` overrides a "
                    "pattern at run time")
    refresh_seconds: float = Field(
        default=1.0, ge=0, description="how often servers re-read policies from the index")
