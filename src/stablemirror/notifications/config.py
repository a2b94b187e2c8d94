"""The `notifications` settings section (docs/notifications.md).

Secrets (`secret`, header values) are never echoed in an error: the checks that look at
them run on the whole endpoint, whose values the one-line error does not repeat."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator

Action = Literal["push", "delete", "mount", "promote"]
ACTIONS: tuple[Action, ...] = ("push", "delete", "mount", "promote")
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
MIN_SECRET = 16


class EndpointSettings(BaseModel):
    name: str
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict,
                                          description="sent with every request")
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the Stablemirror-Signature-256 header")
    timeout_seconds: float = Field(default=5.0, gt=0, description="per request")
    actions: list[Action] = Field(default_factory=lambda: list(ACTIONS),
                                  description="actions sent; default all")
    repositories: list[str] = Field(default_factory=list,
                                    description="fnmatch globs; default all")
    ignore_media_types: list[str] = Field(default_factory=list)
    backoff_seconds: float = Field(default=1.0, gt=0, description="first retry delay")
    backoff_max_seconds: float = Field(default=300.0, gt=0, description="retry delay cap")
    max_pending: int = Field(default=100_000, ge=1,
                             description="undelivered events kept; then the oldest go")
    batch_size: int = Field(default=10, ge=1, le=1000, description="events per request")

    @model_validator(mode="before")
    @classmethod
    def _secrets_are_strings(cls, data: Any) -> Any:
        # Before pydantic's own checks, whose errors would quote the value given.
        if not isinstance(data, dict):
            return data
        where = f"notifications endpoint {data.get('name', '?')!r}"
        secret = data.get("secret")
        if secret is not None and not isinstance(secret, str | SecretStr):
            raise ValueError(f"{where}: secret must be a string")
        if isinstance(secret, str) and len(secret) < MIN_SECRET:
            raise ValueError(f"{where}: secret must be at least {MIN_SECRET} characters")
        headers = data.get("headers")
        if headers is not None:
            if not isinstance(headers, dict):
                raise ValueError(f"{where}: headers must be a mapping of name to value")
            for key, value in headers.items():
                if not isinstance(key, str) or not HEADER_NAME.match(key):
                    raise ValueError(f"{where}: header name {key!r} is not a token")
                if not isinstance(value, str | SecretStr):
                    raise ValueError(f"{where}: header {key} must have a string value")
                if isinstance(value, str) and ("\n" in value or "\r" in value):
                    raise ValueError(f"{where}: header {key} has a line break in its value")
        return data

    @model_validator(mode="after")
    def _endpoint_is_usable(self) -> EndpointSettings:
        where = f"notifications endpoint {self.name!r}"
        if not ENDPOINT_NAME.match(self.name):
            raise ValueError(f"{where}: name must be 1-64 of A-Z a-z 0-9 . _ -")
        try:
            parts = urlsplit(self.url)
            _ = parts.port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{where}: url must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"{where}: url must not hold credentials (use headers)")
        if self.backoff_max_seconds < self.backoff_seconds:
            raise ValueError(f"{where}: backoff_max_seconds is below backoff_seconds")
        return self


class NotificationSettings(BaseModel):
    endpoints: list[EndpointSettings] = Field(default_factory=list)
    poll_seconds: float = Field(default=1.0, gt=0,
                                description="how often each worker looks for due events")
    lease_seconds: float = Field(
        default=30.0, gt=0, description="an endpoint's sender is taken over this long "
        "after it stopped (above every endpoint's timeout)")
    base_url: str | None = Field(
        default=None, description="this registry's URL in target.url and request.host; "
        "default: http://<listen>")

    @model_validator(mode="after")
    def _endpoints_fit(self) -> NotificationSettings:
        seen: set[str] = set()
        for e in self.endpoints:
            if e.name in seen:
                raise ValueError(f"notifications endpoint {e.name!r} is named twice")
            seen.add(e.name)
            if e.timeout_seconds >= self.lease_seconds:
                raise ValueError(f"notifications endpoint {e.name!r}: timeout_seconds must be "
                                 "below notifications.lease_seconds")
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("notifications.base_url must be an http:// or https:// URL")
        return self
