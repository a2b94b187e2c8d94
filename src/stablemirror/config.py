"""Settings: one pydantic-settings schema. Precedence: CLI > STABLEMIRROR_* env > YAML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from stablemirror.audit.config import AuditSettings
from stablemirror.auth.config import AuthSettings
from stablemirror.mirror_config import MirrorSettings
from stablemirror.releases.config import ReleaseSettings
from stablemirror.trust.config import IntegritySettings, TrustSettings


class GcSettings(BaseModel):
    grace_seconds: float = Field(default=3600.0, ge=0,
                                 description="fresh blobs are never collected")
    upload_max_age_seconds: float = Field(default=7 * 86400.0, ge=0,
                                          description="abandoned uploads older than this go")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STABLEMIRROR_", env_nested_delimiter="__",
                                      extra="forbid")

    listen: str = "127.0.0.1:5000"
    data_dir: Path = Path("./data")
    workers: int = Field(0, ge=0, description="processes on one socket; 0 = CPU count")
    database_url: str | None = Field(None, description="default: SQLite in the data dir")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    gc: GcSettings = Field(default_factory=GcSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    admin_password: SecretStr | None = Field(
        None, description="STABLEMIRROR_ADMIN_PASSWORD: creates `admin` on first start")
    upstream: list[str] = Field(
        default_factory=list, description="quick form: proxy every repository to these URLs"
    )
    mirror: MirrorSettings = Field(default_factory=MirrorSettings)
    integrity: IntegritySettings = Field(default_factory=IntegritySettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    releases: ReleaseSettings = Field(default_factory=ReleaseSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)

    @property
    def index_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'index.db'}"

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


def load_settings(config_file: Path | None = None, **cli: Any) -> Settings:
    """Settings from the CLI values that were given, the environment and `config_file`."""
    given = {k: v for k, v in cli.items() if v is not None}
    if config_file is None:
        return Settings(**given)

    class FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    return FileSettings(**given)
