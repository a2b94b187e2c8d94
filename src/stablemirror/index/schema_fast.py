"""An SQLite index at the newest schema without importing Alembic (docs/footprint.md).

Alembic and its SQLAlchemy imports cost ~0.4 s and ~20 MiB in the process that migrates,
which is the only process of a node (`serve --role node`, one worker). So before
index/migrate.py is imported, the stored revision is read with the stdlib's sqlite3:

* already at the head revision (every restart): nothing to do;
* a new, empty index: the schema is created from `schema_sqlite.sql`, the dump of an index
  that Alembic brought to that snapshot's revision (data rows included: the audit chain's
  head), in one BEGIN IMMEDIATE transaction, when that revision is the head;
* anything else (an older schema, PostgreSQL, a snapshot behind a new migration, a file
  that is not a database): `False`, and the caller runs Alembic as before.

The snapshot's equality with what Alembic makes is a test (tests/unit/index/
test_schema_fast.py); `python -m stablemirror.index.schema_fast` rewrites it.
"""

from __future__ import annotations

import ast
import sqlite3
import sys
from pathlib import Path

from stablemirror.files.sqlite_wal import ensure_wal

VERSIONS = Path(__file__).parent / "migrations" / "versions"
SNAPSHOT = Path(__file__).parent / "schema_sqlite.sql"
SNAPSHOT_HEADER = "-- revision: "  # the snapshot's first line names its revision


def head_revision(versions: Path = VERSIONS) -> str | None:
    """The one revision no other migration names as its `down_revision`; None when there
    are several heads or a file cannot be read that way (Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        values: dict[str, object] = {}
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, ast.Constant):
                values[node.targets[0].id] = node.value.value
        revision, down = values.get("revision"), values.get("down_revision")
        if path.name == "__init__.py" and revision is None:
            continue
        if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
            return None
        revisions.add(revision)
        if down is not None:
            parents.add(down)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def sqlite_file(url: str) -> Path | None:
    """The file of a plain `sqlite:///PATH` URL; None for anything else."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or url == prefix:
        return None
    return Path(url[len(prefix):])


def snapshot_revision(snapshot: Path = SNAPSHOT) -> str | None:
    try:
        with snapshot.open() as f:
            first = f.readline().strip()
    except OSError:
        return None
    return first[len(SNAPSHOT_HEADER):] if first.startswith(SNAPSHOT_HEADER) else None


def snapshot_statements(snapshot: Path = SNAPSHOT) -> list[str]:
    statements, pending = [], ""
    for line in snapshot.read_text().splitlines(keepends=True):
        if not pending and line.startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


def _stored_revision(conn: sqlite3.Connection) -> str | None:
    has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                             "name='alembic_version'").fetchone()
    if has_table is None:
        return None
    rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return str(rows[0][0]) if len(rows) == 1 else None


def _is_empty(conn: sqlite3.Connection) -> bool:
    count: int = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return count == 0


def at_head_without_alembic(url: str, versions: Path = VERSIONS,
                            snapshot: Path = SNAPSHOT) -> bool:
    """True when the index is at the head revision afterwards, Alembic never imported."""
    path = sqlite_file(url)
    head = head_revision(versions)
    if path is None or head is None:
        return False
    try:
        if path.is_file():  # read-only first: a restart writes nothing
            with _connect(f"file:{path}?mode=ro") as conn:
                stored = _stored_revision(conn)
                if stored is not None or not _is_empty(conn):
                    return stored == head
        if snapshot_revision(snapshot) != head:
            return False
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # another process may be creating it too
            if not _is_empty(conn):
                conn.execute("ROLLBACK")
                return _stored_revision(conn) == head
            for statement in snapshot_statements(snapshot):
                conn.execute(statement)
            conn.execute("COMMIT")
            ensure_wal(conn)  # here, before the workers fork: not by both of them at once
        finally:
            conn.close()
    except sqlite3.Error:
        return False  # Alembic reports it, one line (server/startup.py)
    return True


def _connect(uri: str) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)


def dump(path: Path) -> list[str]:
    """An index's full content as SQL statements (stdlib iterdump), without its own
    transaction statements."""
    conn = sqlite3.connect(path)
    try:
        return [s for s in conn.iterdump() if s not in ("BEGIN TRANSACTION;", "COMMIT;")]
    finally:
        conn.close()


def write_snapshot(work: Path, snapshot: Path = SNAPSHOT) -> str:
    """Migrate a new index in `work` with Alembic and write its dump as the snapshot."""
    from stablemirror.index.migrate import upgrade

    db = work / "index.db"
    upgrade(f"sqlite:///{db}")
    head = head_revision()
    snapshot.write_text(f"{SNAPSHOT_HEADER}{head}\n-- written by `python -m "
                        "stablemirror.index.schema_fast` from the migrations; do not edit\n"
                        + "\n".join(dump(db)) + "\n")
    return str(head)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(f"{SNAPSHOT}: revision {write_snapshot(Path(tmp))}", file=sys.stderr)
