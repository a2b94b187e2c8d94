"""schema_fast.py: an SQLite index is brought to the head revision without Alembic only
when that gives exactly what Alembic would; everything else is left to Alembic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config

from stablemirror.index.db import sqlite_engine
from stablemirror.index.migrate import MIGRATIONS, upgrade
from stablemirror.index.schema_fast import (
    SNAPSHOT,
    at_head_without_alembic,
    dump,
    head_revision,
    snapshot_revision,
    sqlite_file,
)


def _alembic_to(url: str, revision: str) -> None:
    engine = sqlite_engine(url, "BEGIN IMMEDIATE")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


def test_the_snapshot_is_what_alembic_makes(tmp_path: Path) -> None:
    """Tables, indexes and rows alike; a new migration makes the snapshot stale:
    `python -m stablemirror.index.schema_fast` rewrites it."""
    assert snapshot_revision() == head_revision(), (
        f"{SNAPSHOT.name} is behind the migrations: run "
        "`.venv/bin/python -m stablemirror.index.schema_fast`")
    by_alembic, by_snapshot = tmp_path / "alembic.db", tmp_path / "snapshot.db"
    upgrade(f"sqlite:///{by_alembic}")
    assert at_head_without_alembic(f"sqlite:///{by_snapshot}")
    assert dump(by_snapshot) == dump(by_alembic)


def test_an_index_at_head_is_only_read(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    upgrade(f"sqlite:///{db}")
    before = db.stat().st_mtime_ns, dump(db)
    assert at_head_without_alembic(f"sqlite:///{db}")
    assert (db.stat().st_mtime_ns, dump(db)) == before


def test_an_older_schema_is_left_to_alembic(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    url = f"sqlite:///{db}"
    head = head_revision()
    assert head is not None and head != "0001"
    _alembic_to(url, "0001")
    assert not at_head_without_alembic(url)
    upgrade(url)  # what server/startup.py then does
    assert sqlite3.connect(db).execute("SELECT version_num FROM alembic_version"
                                       ).fetchall() == [(head,)]
    assert at_head_without_alembic(url)


def test_a_stale_snapshot_is_not_used(tmp_path: Path) -> None:
    stale = tmp_path / "schema.sql"
    stale.write_text("-- revision: 0001\nCREATE TABLE t (x INTEGER);\n")
    db = tmp_path / "index.db"
    assert not at_head_without_alembic(f"sqlite:///{db}", snapshot=stale)
    assert not db.exists() or dump(db) == []


def test_a_file_that_is_not_a_database_is_left_to_alembic(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    db.write_bytes(b"not a database, " * 100)
    assert not at_head_without_alembic(f"sqlite:///{db}")


def test_several_heads_or_other_urls_are_left_to_alembic(tmp_path: Path) -> None:
    for name, rev, down in (("a.py", "1", None), ("b.py", "2", "1"), ("c.py", "3", "1")):
        (tmp_path / name).write_text(f"revision = {rev!r}\ndown_revision = {down!r}\n")
    assert head_revision(tmp_path) is None
    (tmp_path / "c.py").unlink()
    assert head_revision(tmp_path) == "2"
    assert sqlite_file("postgresql://u@h/db") is None
    assert sqlite_file("sqlite:///:memory:?cache=shared") is None
    assert not at_head_without_alembic("postgresql://u@127.0.0.1:1/db")


def test_connections_switching_to_wal_together_all_succeed(tmp_path: Path) -> None:
    """Workers forked together each open the index and ask for WAL at the same moment;
    SQLite answers that race with SQLITE_BUSY at once (no busy handler), which killed a
    worker at start-up. 30 rounds of 4 connections racing on a fresh rollback-journal file
    (a plain `PRAGMA journal_mode=WAL` fails in about 1 round of 10 here)."""
    import threading

    from stablemirror.files.sqlite_wal import ensure_wal

    def switch(path: Path, barrier: threading.Barrier, errors: list[BaseException]) -> None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            barrier.wait(5)
            ensure_wal(conn)
            conn.execute("SELECT count(*) FROM t").fetchone()
        except BaseException as err:  # collected for the assertion below
            errors.append(err)
        finally:
            conn.close()

    for round_ in range(30):
        path = tmp_path / f"r{round_}.db"
        first = sqlite3.connect(path)
        first.execute("CREATE TABLE t (x)")
        first.commit()
        first.close()
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []
        threads = [threading.Thread(target=switch, args=(path, barrier, errors))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [], (round_, errors)
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        check.close()
