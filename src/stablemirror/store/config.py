"""Storage settings (the `storage:` section; env STABLEMIRROR_STORAGE__*). docs/storage.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from stablemirror.store.hot_config import HotTierSettings

Backend = Literal["filesystem", "s3"]


class S3Settings(BaseModel):
    endpoint: str | None = Field(
        default=None, description="http(s)://host:port of the S3 API; default: AWS for region")
    bucket: str = Field(default="", description="bucket holding blobs and upload sessions")
    region: str = Field(default="us-east-1", description="signing region")
    access_key: SecretStr | None = Field(
        default=None, description="access key id; none (with no secret) = anonymous requests")
    secret_key: SecretStr | None = Field(default=None, description="secret access key")
    prefix: str = Field(default="", description="key prefix, e.g. 'registry/'")
    create_bucket: bool = Field(default=False, description="create the bucket at start-up")
    redirect: bool = Field(
        default=False, description="blob GETs answer 307 to a pre-signed URL (off: proxied)")
    redirect_expiry_seconds: int = Field(default=1200, ge=1, le=7 * 86400,
                                         description="lifetime of a pre-signed URL")
    part_size_mib: int = Field(default=8, ge=5, le=1024,
                               description="multipart part size (S3 wants 5 MiB or more)")

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3Settings:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("storage.s3.access_key and secret_key: give both or neither")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"storage.s3.endpoint {self.endpoint!r}: expected http(s)://HOST")
        return self


class StorageSettings(BaseModel):
    backend: Backend = Field(default="filesystem",
                             description="where blobs live: filesystem (data_dir) or s3")
    s3: S3Settings = Field(default_factory=S3Settings)
    hot: HotTierSettings = Field(default_factory=HotTierSettings)  # store/tiered.py

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("storage.backend s3: storage.s3.bucket is not set")
        return self
