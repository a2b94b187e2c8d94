"""What a command checks before it works on a data dir, each failure one `StartupError` line.

`serve` creates a missing data dir (when its parent allows); `gc` and `scrub` never do: on a
mistyped path they would report an empty registry as if all were well. "Writable" means a
file can really be created and removed there (not `os.access`, which says yes to root on a
chmod-0 directory while a read-only mount or an immutable directory still refuses).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from pathlib import Path

from stablemirror.config import Settings
from stablemirror.index.schema_fast import at_head_without_alembic
from stablemirror.logs import configure_logging

# SQLAlchemy, Alembic and the S3 client are imported by the checks that need them: a node
# on SQLite and files never does (docs/footprint.md).

# The directories a push writes to (store/filesystem.py); `serve` checks them at start
# and /readyz keeps checking them (registry/health.py).
PUSH_DIRS = ("blobs", "uploads")


class StartupError(Exception):
    """A start-up problem outside the settings (port in use, data dir, index): one line."""

    exit_code = 1


def configure_command_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    # Alembic logs every migration step at INFO: noise in every command's output.
    if settings.log_level != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # botocore's debug lines carry request headers (the S3 access key id, signatures):
    # never below INFO, whatever the log level.
    for name in ("botocore", "aiobotocore"):
        logging.getLogger(name).setLevel(logging.INFO)


def probe_writable(directory: Path) -> None:
    """Create and remove an entry in `directory`; raises OSError when that is refused.

    A directory, not a file: blobs/ holds only directories, and a listing racing the probe
    must not meet a file there (store/filesystem.py list_blobs)."""
    probe = directory / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    probe.mkdir()
    probe.rmdir()


def _check_writable(path: Path, what: str) -> None:
    if not path.is_dir():
        raise StartupError(f"{what} '{path}': not a directory")
    try:
        probe_writable(path)
    except OSError as exc:
        raise StartupError(f"{what} '{path}': not writable: {exc.strerror}") from None


def check_data_dir(settings: Settings, *, create: bool) -> None:
    """The data dir exists (or, with `create`, is made), is a directory and takes writes;
    so do the push directories in it that exist already."""
    path = settings.data_dir
    if not path.exists():
        if path.is_symlink():
            raise StartupError(f"data dir '{path}': a dangling symlink")
        if not create:
            raise StartupError(f"data dir '{path}': no such directory")
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise StartupError(f"data dir '{path}': cannot create: {exc.strerror}") from None
    _check_writable(path, "data dir")
    if not create and settings.database_url is None and not (path / "index.db").is_file():
        raise StartupError(f"data dir '{path}': no index.db, not a stablemirror data dir")
    for name in PUSH_DIRS:
        sub = path / name
        if sub.exists() or sub.is_symlink():
            _check_writable(sub, "data dir")
    check_hot_dir(settings)


def check_hot_dir(settings: Settings) -> None:
    """The hot tier's directory (store/tiered.py), when one is set: made, and writable."""
    hot = settings.storage.hot.path
    if hot is None:
        return
    try:
        hot.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a file, not a directory: said below
    except OSError as exc:
        raise StartupError(f"storage.hot.path '{hot}': cannot create: {exc.strerror}"
                           ) from None
    _check_writable(hot, "storage.hot.path")


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"


def check_storage(settings: Settings) -> None:
    """With `storage.backend: s3`, the bucket answers (created first with `create_bucket`);
    an unreachable endpoint or a missing bucket is one line (never the keys)."""
    if settings.storage.backend != "s3":
        return
    from stablemirror.oci.errors import StorageUnavailable
    from stablemirror.store.s3_client import S3Connection, S3Missing

    cfg = settings.storage.s3
    where = cfg.endpoint or f"AWS S3 ({cfg.region})"

    async def probe() -> None:
        s3 = S3Connection(cfg, log_failures=False)
        try:
            await s3.ensure_bucket(create=cfg.create_bucket)
        finally:
            await s3.aclose()

    try:
        asyncio.run(probe())
    except S3Missing:
        raise StartupError(f"storage.s3.bucket {cfg.bucket!r}: no such bucket at {where} "
                           "(storage.s3.create_bucket: true creates it)") from None
    except StorageUnavailable as exc:
        raise StartupError(f"storage.s3.endpoint {where}, bucket {cfg.bucket!r}: unusable: "
                           f"{exc.detail.get('reason', 'no answer')}") from None


def migrate_index(settings: Settings) -> None:
    """Bring the index to the newest schema; a database that refuses is one line. An
    SQLite index at the head revision, or a new one, needs no Alembic (index/schema_fast.py)."""
    if at_head_without_alembic(settings.index_url):
        return
    from sqlalchemy.exc import SQLAlchemyError

    from stablemirror.index.migrate import upgrade

    try:
        upgrade(settings.index_url)
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StartupError(f"index {_redacted(settings.index_url)}: {cause}") from None


def bind(settings: Settings) -> socket.socket:
    """The listening socket, inheritable by the forked workers."""
    try:
        host, port = settings.host_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.listen}: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(f"cannot listen on {settings.listen}: {reason}") from None
    sock.set_inheritable(True)
    return sock
