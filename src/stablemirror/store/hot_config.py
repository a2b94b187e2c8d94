"""Settings of the local hot tier over the blob store (store/tiered.py, docs/storage.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, ValidationInfo, field_validator


class HotTierSettings(BaseModel):
    """`path` unset: no hot tier. Set: blobs read `promote_after` times within `window`
    seconds are copied (verified) to `path` and served from there; above `high_watermark`
    x `max_bytes` the least valuable copies go until `low_watermark` x `max_bytes`."""

    path: Path | None = Field(default=None, description="a local (SSD) directory; unset: off")
    max_bytes: int = Field(default=100 << 30, gt=0, description="what the hot copies may use")
    promote_after: int = Field(default=2, ge=1, description="hits within `window` to promote")
    window: float = Field(default=3600.0, gt=0,
                          description="seconds hits are counted for; the score's half-life")
    high_watermark: float = Field(default=0.9, gt=0, le=1,
                                  description="fraction of max_bytes that starts eviction")
    low_watermark: float = Field(default=0.7, gt=0, lt=1,
                                 description="fraction of max_bytes eviction goes down to")

    @field_validator("low_watermark")
    @classmethod
    def _below_the_high_mark(cls, low: float, info: ValidationInfo) -> float:
        high = info.data.get("high_watermark")  # declared first: validated already
        if high is not None and low >= high:
            raise ValueError(f"must be below high_watermark ({high})")
        return low

    @property
    def high_bytes(self) -> int:
        return int(self.max_bytes * self.high_watermark)

    @property
    def low_bytes(self) -> int:
        return int(self.max_bytes * self.low_watermark)

