"""The `replication` settings section: `replication.rules[]` (docs/replication.md).

Every rule is checked at start-up (its filters compiled, its cron parsed, its ends read), so
a mistake is one SettingsError line naming `replication.rules.N.<field>`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from stablemirror.replication.cron import CronInvalid, parse_cron
from stablemirror.replication.filters import FilterInvalid, parse_tag_filter

SELF = "self"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?)(B|bit)?(?:/s)?\s*$")
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(value: int | str) -> int:
    """Bytes per second: an int, or `50MB`, `64MiB`, `100Mbit` (per second)."""
    if isinstance(value, int):
        return value
    m = _RATE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a rate (e.g. 50MB, 64MiB, 100Mbit)")
    number, unit, binary, kind = m.groups()
    scale = (1024 ** "kmg".index(unit.lower()) * 1024 if binary and unit
             else _UNITS[unit.lower()])
    rate = float(number) * scale
    return int(rate / 8 if kind == "bit" else rate)


class Credentials(BaseModel):
    username: str
    password: str = ""


class RuleCredentials(BaseModel):
    source: Credentials | None = None
    destination: Credentials | None = None


class Filters(BaseModel):
    repositories: list[str] = Field(
        default_factory=list, description="globs of source repositories; none: all")
    tags: str | None = Field(default=None, description="regex of tags, or semver:RANGE")
    channels: list[str] = Field(
        default_factory=list, description="only the versions these release channels point "
        "at (and the channels themselves at a stablemirror destination)")
    platforms: list[str] | None = Field(
        default=None, description="OS/ARCH[/VARIANT] to keep of an index; none: all")
    signed_only: bool = Field(default=False,
                              description="only manifests with a cosign signature")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: str | None) -> str | None:
        try:
            parse_tag_filter(value)
        except FilterInvalid as e:
            raise ValueError(str(e)) from None
        return value


class Trigger(BaseModel):
    event: bool = Field(default=False, description="copy on every push/delete at the source "
                        "(source: self)")
    cron: str | None = Field(default=None, description='e.g. "0 * * * *" (UTC)')

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except CronInvalid as e:
                raise ValueError(str(e)) from None
        return value


class Rule(BaseModel):
    name: str
    source: str = Field(default=SELF, description="`self` or a registry URL")
    destination: str = Field(default=SELF, description="`self` or a registry URL")
    mode: Literal["push", "pull"] = "push"
    filters: Filters = Field(default_factory=Filters)
    trigger: Trigger = Field(default_factory=Trigger)
    delete: Literal["propagate", "keep"] = "keep"
    bandwidth_limit: int | str = Field(default=0, description="bytes/s read from the source "
                                       "(50MB, 100Mbit); 0: unlimited")
    parallel_streams: int = Field(default=4, ge=1, le=64)
    parallel_blobs: int = Field(default=4, ge=1, le=64)
    chunk_size_mib: int = Field(default=8, ge=1, le=1024)
    destination_prefix: str = Field(default="", description="prepended to repository names")
    credentials: RuleCredentials = Field(default_factory=RuleCredentials)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("bandwidth_limit")
    @classmethod
    def _rate(cls, value: int | str) -> int:
        rate = parse_rate(value)
        if rate < 0:
            raise ValueError("must be at least 0")
        return rate

    @field_validator("source", "destination")
    @classmethod
    def _end(cls, value: str) -> str:
        if value != SELF and not re.match(r"^(https?://)?[A-Za-z0-9.\[\]:-]+(:\d+)?/?$", value):
            raise ValueError("must be `self` or a registry URL (https://host[:port])")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _ends(self) -> Rule:
        if self.mode == "push" and self.source != SELF:
            raise ValueError(f"rule {self.name}: mode push copies from this registry: "
                             "source must be `self` (or use mode pull)")
        if self.mode == "pull" and self.destination != SELF:
            raise ValueError(f"rule {self.name}: mode pull copies into this registry: "
                             "destination must be `self` (or use mode push)")
        if self.source == SELF and self.destination == SELF:
            raise ValueError(f"rule {self.name}: source and destination are both `self`")
        if self.trigger.event and self.source != SELF:
            raise ValueError(f"rule {self.name}: trigger.event needs source `self` (events "
                             "are this registry's)")
        return self

    @property
    def rate(self) -> int:
        return parse_rate(self.bandwidth_limit)


class ReplicationSettings(BaseModel):
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ReplicationSettings:
        names = [r.name for r in self.rules]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"rule name {dup!r} is used twice")
        return self

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)
