"""Settings: one pydantic-settings schema. Precedence: CLI > STABLEMIRROR_* env > YAML file.

Every mistake in them becomes one `SettingsError` naming the setting, where it came from
(`--listen`, `STABLEMIRROR_LISTEN` or `file.yaml: listen`) and the value; the CLI prints it
as one line (cli/main.py). Unknown names are refused wherever they appear: a YAML key at any
depth, or a `STABLEMIRROR_*` environment variable (settings_names.py).
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from stablemirror.audit.config import AuditSettings
from stablemirror.auth.config import AuthSettings
from stablemirror.index.pool_size import PoolSize
from stablemirror.jobs.config import JobSettings
from stablemirror.mirror.config import MirrorSettings
from stablemirror.notifications.config import NotificationSettings
from stablemirror.p2p.config import P2PSettings
from stablemirror.releases.config import ReleaseSettings
from stablemirror.replication.config import ReplicationSettings
from stablemirror.scanning.config import ScanningSettings
from stablemirror.settings_names import ENV_PREFIX, unknown_env_names, unknown_keys
from stablemirror.store.config import StorageSettings
from stablemirror.trust.config import IntegritySettings, TrustSettings

Role = Literal["center", "edge", "node"]
DEFAULT_HOST = "127.0.0.1"
# Settings given on the command line, by their option (for naming them in an error).
CLI_OPTIONS = {"listen": "--listen", "data_dir": "--data-dir", "workers": "--workers",
               "log_format": "--log-format", "log_level": "--log-level",
               "upstream": "--upstream", "role": "--role", "auth": "--auth",
               "p2p": "--p2p"}


class SettingsError(ValueError):
    """A settings mistake, as one line for the user: which setting, its value, what is wrong."""

    exit_code = 2  # a usage error, as click reports its own


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets, an empty host = 127.0.0.1) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port or (":" in host and not (host.startswith("[")
                                                     and host.endswith("]"))):
        raise ValueError("expected HOST:PORT (IPv6 as [::1]:PORT)")
    if not port.isdigit():
        raise ValueError(f"port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {int(port)} is out of range 1-65535")
    return host.strip("[]") or DEFAULT_HOST, int(port)


def check_upstream_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return url


UpstreamUrl = Annotated[str, AfterValidator(check_upstream_url)]


class GcSettings(BaseModel):
    grace_seconds: float = Field(default=3600.0, ge=0,
                                 description="fresh blobs are never collected")
    upload_max_age_seconds: float = Field(default=7 * 86400.0, ge=0,
                                          description="abandoned uploads older than this go")
    interval_seconds: float = Field(
        default=0.0, ge=0, description="`serve` runs GC (with the upload cleanup) as the "
        "periodic `gc` job this often, once across replicas; 0 = only `stablemirror gc`")


IndexBackend = Literal["sqlalchemy", "sqlite3"]


class DatabaseSettings(BaseModel):
    """PostgreSQL connections per process (index/db.py); SQLite ignores them."""
    backend: Literal["auto", "sqlalchemy", "sqlite3"] = Field(
        default="auto", description="the index's code: sqlalchemy (every feature, SQLite "
        "or PostgreSQL) or sqlite3 (the stdlib, a node's pull-through cache only: ~12 MiB "
        "less); auto = sqlite3 for a node that needs nothing more (docs/footprint.md)")
    pool_size: int = Field(default=10, ge=1, description="connections kept open")
    max_overflow: int = Field(default=10, ge=0,
                              description="extra connections under load, closed after")
    pool_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a request waiting longer for a connection gets "
        "503 UNAVAILABLE")


class ConnectionSettings(BaseModel):
    """Slow and greedy clients (api/connections.py); 0 turns a guard off."""
    header_timeout_seconds: float = Field(
        default=15.0, ge=0, description="a request's headers must arrive within this")
    body_idle_timeout_seconds: float = Field(
        default=60.0, ge=0, description="a request body that stops this long ends with 408")
    max_per_client: int = Field(
        default=256, ge=0, description="open connections per client address, per worker")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      extra="forbid")

    role: Role = Field("center", description="placement: center, edge or node (README)")
    listen: str = f"{DEFAULT_HOST}:5000"
    data_dir: Path = Path("./data")
    workers: int | None = Field(None, ge=1,
                                description="processes on one socket; default by role")
    database_url: str | None = Field(None, description="default: SQLite in the data dir")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    replica_id: str | None = Field(
        None, description="this replica's name in job leases and per-host jobs; default: "
        "hostname-<hash of the data dir path> (docs/jobs.md)")
    jobs: JobSettings = Field(default_factory=JobSettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_dir: Path | None = Field(
        None, description="where each server makes its private metrics dir; default: "
                          "/dev/shm, $XDG_RUNTIME_DIR or the temp dir, never the data disk")
    gc: GcSettings = Field(default_factory=GcSettings)
    connections: ConnectionSettings = Field(default_factory=ConnectionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    admin_password: SecretStr | None = Field(
        None, description="STABLEMIRROR_ADMIN_PASSWORD: creates `admin` on first start")
    upstream: list[UpstreamUrl] = Field(
        default_factory=list, description="quick form: proxy every repository to these URLs"
    )
    mirror: MirrorSettings = Field(default_factory=MirrorSettings)
    integrity: IntegritySettings = Field(default_factory=IntegritySettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    releases: ReleaseSettings = Field(default_factory=ReleaseSettings)
    scanning: ScanningSettings = Field(default_factory=ScanningSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    replication: ReplicationSettings = Field(default_factory=ReplicationSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    p2p: P2PSettings = Field(default_factory=P2PSettings)

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @model_validator(mode="after")
    def _placement_is_complete(self) -> Settings:
        for group, settings in self.mirror.upstream_groups.items():
            for i, upstream in enumerate(settings.upstreams):
                try:
                    check_upstream_url(upstream.url)
                except ValueError as exc:
                    raise ValueError(f"mirror.upstream_groups.{group}.upstreams[{i}].url "
                                     f"{upstream.url!r}: {exc}") from None
        replicas = self.mirror.replicas
        if (replicas.advertise_url is None) != (replicas.secret is None):
            raise ValueError("mirror.replicas needs both advertise_url and secret "
                             "(or neither)")
        if replicas.advertise_url is not None:
            try:
                check_upstream_url(replicas.advertise_url)
            except ValueError as exc:
                raise ValueError(f"mirror.replicas.advertise_url "
                                 f"{replicas.advertise_url!r}: {exc}") from None
        _groups, namespaces = self.mirror.effective(self.upstream)
        if self.p2p.enabled and self.worker_count != 1:
            raise ValueError("p2p.enabled runs one BitTorrent session on one port: "
                             f"--workers must be 1, not {self.worker_count}")
        if self.role != "center" and not any(ns.mode != "hosted" for ns in namespaces):
            raise ValueError(f"role {self.role!r} pulls through an upstream: give --upstream "
                             "URL or mirror.namespaces (docs/mirror.md)")
        if self.database.backend == "sqlite3" and (needs := self.sqlalchemy_needed_by()):
            raise ValueError("database.backend sqlite3 serves a pull-through cache only; "
                             f"these need database.backend sqlalchemy: {', '.join(needs)}")
        return self

    def sqlalchemy_needed_by(self) -> list[str]:
        """What these settings turn on that only the SQLAlchemy index backend implements
        (the sqlite3 one covers a node's pull-through cache: docs/footprint.md)."""
        from stablemirror.index.schema_fast import sqlite_file

        _groups, namespaces = self.mirror.effective(self.upstream)
        audit = self.audit.enabled if self.audit.enabled is not None else self.auth.enabled
        needs = {
            "database_url (not an SQLite file)": sqlite_file(self.index_url) is None,
            "auth": self.auth.enabled,
            "audit": audit,
            "notifications.endpoints": bool(self.notifications.endpoints),
            "replication.rules": bool(self.replication.rules),
            "scanning.policies": bool(self.scanning.policies),
            "mirror.replicas": self.mirror.replicas.enabled,
            "hosted namespaces (release channels)": any(ns.mode != "proxy"
                                                        for ns in namespaces),
        }
        return [name for name, needed in needs.items() if needed]

    @property
    def index_backend(self) -> IndexBackend:
        """`database.backend`, with auto decided: the sqlite3 backend for a node whose
        settings need nothing more, else SQLAlchemy (docs/footprint.md)."""
        if self.database.backend != "auto":
            return self.database.backend
        lite = self.role == "node" and not self.sqlalchemy_needed_by()
        return "sqlite3" if lite else "sqlalchemy"

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
    def db_pool(self) -> PoolSize:
        db = self.database
        return PoolSize(db.pool_size, db.max_overflow, db.pool_timeout_seconds)

    @property
    def replica(self) -> str:
        """Names this replica: the same host and data dir are the same replica (its
        per-host jobs, such as evicting its cache, are the same work)."""
        if self.replica_id:
            return self.replica_id
        where = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{where}"

    @property
    def worker_count(self) -> int:
        if self.workers is not None:
            return self.workers
        # A node cache serves one host's container runtime: one process is plenty and
        # leaves the host's cores to its workloads. Center and edge use every core.
        return 1 if self.role == "node" else os.cpu_count() or 1

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)


def _read_yaml(config_file: Path) -> dict[str, Any]:
    where = f"--config '{config_file}'"
    if not config_file.exists():
        raise SettingsError(f"{where}: no such file")
    if not config_file.is_file():
        raise SettingsError(f"{where}: not a file")
    try:
        data = yaml.safe_load(config_file.read_text())
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SettingsError(f"{where}: not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a mapping of settings, got "
                            f"{type(data).__name__}")
    return data


def _source(loc: tuple[int | str, ...], given: dict[str, Any], config_file: Path | None) -> str:
    """Where the setting at `loc` came from: its option, its variable, or the file."""
    dotted = ".".join(str(p) for p in loc if isinstance(p, str))
    if loc and loc[0] in given and loc[0] in CLI_OPTIONS:
        return CLI_OPTIONS[str(loc[0])]
    env_name = ENV_PREFIX + "__".join(str(p) for p in loc if isinstance(p, str)).upper()
    if any(name.upper() == env_name for name in os.environ):
        return env_name
    return f"{config_file}: {dotted}" if config_file is not None else dotted


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_errors(exc: ValidationError, given: dict[str, Any],
                    config_file: Path | None) -> str:
    errors = exc.errors()
    first = errors[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if first["type"] in bounds:  # "must be at least 1", not pydantic's longer sentence
        words, key = bounds[first["type"]]
        message = f"must be {words} {first.get('ctx', {}).get(key)}"
    loc = tuple(first["loc"])
    if not loc:  # a check across settings: its message names them
        line = message
    elif first["type"] == "missing" or isinstance(first["input"], dict):
        # a section's own check: its message names the settings; the section's values
        # are not repeated (they may hold secrets, e.g. storage.s3.secret_key)
        line = f"{_source(loc, given, config_file)}: {message}"
    else:
        line = f"{_source(loc, given, config_file)} {_shorten(first['input'])}: {message}"
    more = len(errors) - 1
    return line + (f" (and {more} more)" if more else "")


def load_settings(config_file: Path | None = None, **cli: Any) -> Settings:
    """Settings from the CLI values that were given, the environment and `config_file`.

    Raises SettingsError (one line) for a missing or invalid file, an unknown name in the
    file or the environment, and any value the schema refuses."""
    given = {k: v for k, v in cli.items() if v is not None}
    unknown = unknown_env_names(Settings, os.environ)
    if unknown:
        name, hint = unknown[0]
        raise SettingsError(f"unknown environment variable {name}: no such setting"
                            + (f" (did you mean {hint}?)" if hint else ""))
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        unknown_in_file = unknown_keys(Settings, _read_yaml(config_file))
        if unknown_in_file:
            raise SettingsError(f"{config_file}: unknown setting {unknown_in_file[0]!r}")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(yaml_file=config_file)

        settings_cls = FileSettings
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc, given, config_file)) from None
