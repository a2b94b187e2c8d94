"""`stablemirror serve`, on its own: a node cache starts with its GPU host, so the command
that starts it imports only what serving needs (docs/footprint.md). cli/entry.py runs
`serve` without cli/main.py, whose command groups (admin, auth, trust, scan ...) would
load SQLAlchemy, alembic, cryptography and rich for nothing, and its options are parsed
by the stdlib's argparse, not typer: typer and its click cost a node ~30 ms of its start
and ~1.3 MiB. cli/main.py lists `serve` with a pass-through command, so
`stablemirror --help` shows it and `stablemirror serve --help` prints this parser's help.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn, get_args

from stablemirror.config import Role, load_settings
from stablemirror.server.startup import configure_command_logging

SERVE_HELP = "Run the registry."
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ServeUsageError(Exception):
    """A command line argparse refused: one line, exit 2, like a settings mistake."""

    exit_code = 2


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage, then exit
        raise ServeUsageError(f"{message} (see 'stablemirror serve --help')")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def serve_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="stablemirror serve", description=SERVE_HELP,
                       allow_abbrev=False)
    p.add_argument("--listen", metavar="HOST:PORT", help="default 127.0.0.1:5000")
    p.add_argument("--data-dir", type=Path, metavar="PATH",
                   help="blobs + index live here")
    p.add_argument("--config", type=Path, metavar="PATH", help="YAML settings file")
    p.add_argument("--workers", type=_integer, metavar="N",
                   help="processes, at least 1; default: CPU count (node: 1)")
    p.add_argument("--role", choices=get_args(Role),
                   help="placement: center (default), edge or node; edge and node need "
                   "an upstream")
    p.add_argument("--log-format", choices=LOG_FORMATS,
                   help="log lines as text or one JSON object each")
    p.add_argument("--log-level", choices=LOG_LEVELS,
                   help="least severe level logged (default info)")
    p.add_argument("--upstream", action="append", metavar="URL",
                   help="proxy every repository to this registry URL; repeat for backups, "
                   "in order")
    p.add_argument("--auth", action="store_true",
                   help="require tokens (docs/auth.md); STABLEMIRROR_ADMIN_PASSWORD "
                   "creates `admin` on first start")
    p.add_argument("--p2p", action="store_true",
                   help="node: pull blob misses from the cluster's swarm (docs/p2p.md)")
    return p


def serve(argv: list[str]) -> None:
    """Parse `argv` (what follows `serve`), validate the settings, run the server."""
    from stablemirror.server.prefork import serve as run

    args = serve_parser().parse_args(argv)
    settings = load_settings(args.config, listen=args.listen, data_dir=args.data_dir,
                             workers=args.workers, role=args.role,
                             log_format=args.log_format, log_level=args.log_level,
                             upstream=args.upstream or None,
                             auth={"enabled": True} if args.auth else None,
                             p2p={"enabled": True} if args.p2p else None)
    configure_command_logging(settings)
    run(settings)
