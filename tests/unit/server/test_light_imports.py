"""A node (`serve --role node`) imports only what its placement uses (docs/footprint.md):
no Alembic, no SQLAlchemy (its index runs on the stdlib's sqlite3, compose/index.py), no
access control (argon2, JWT, cryptography), no trust keys (PyNaCl), no S3 client
(botocore), no PostgreSQL driver, no rich, no typer (`serve` parses with argparse).
Checked in a fresh interpreter that goes the serve path as far as a built app, on a new
data dir and again on the same one (a restart).
Not a timed test: what is imported is what costs the memory and the time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NODE_START = """
import json, sys
from stablemirror.cli import entry, serve  # the console script and its serve command
from stablemirror.config import load_settings
from stablemirror.metrics import Metrics
from stablemirror.server import prefork
from stablemirror.server.startup import check_data_dir, check_storage, migrate_index

settings = load_settings(None, data_dir=sys.argv[1], role="node",
                         upstream=["http://127.0.0.1:9"])
check_data_dir(settings, create=True)
check_storage(settings)
migrate_index(settings)
from stablemirror.compose.app import build_app  # what prefork's worker imports

app = build_app(settings, Metrics())
print(json.dumps(sorted(sys.modules)))
"""
NOT_ON_A_NODE = ("alembic", "sqlalchemy", "argon2", "jwt", "cryptography", "nacl", "botocore",
                 "aiobotocore", "asyncpg", "psycopg", "rich", "typer", "stablemirror.cli.main",
                 "stablemirror.auth.service", "stablemirror.audit.log",
                 "stablemirror.store.s3", "stablemirror.trust.keys", "libtorrent")


def _modules(data_dir: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", NODE_START, str(data_dir)],
                         capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(out.stdout))


def test_a_node_imports_only_what_it_uses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for start in ("first start", "restart"):
        modules = _modules(data)
        assert "stablemirror.compose.app" in modules, start  # the check saw the app
        loaded = sorted(name for name in NOT_ON_A_NODE
                        if name in modules or any(m.startswith(name + ".") for m in modules))
        assert loaded == [], start
    assert (data / "index.db").is_file()
