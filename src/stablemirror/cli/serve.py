"""`stablemirror serve`, on its own: a node cache starts with its GPU host, so the command
that starts it imports only what serving needs (docs/footprint.md). cli/entry.py runs
`serve_app` for `serve` without cli/main.py, whose command groups (admin, auth, trust,
scan ...) would load SQLAlchemy, alembic, cryptography and rich for nothing; cli/main.py
registers the same `serve` function, so `stablemirror --help` still lists it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from stablemirror.cli.options import ConfigOpt, DataDirOpt
from stablemirror.config import Role, load_settings
from stablemirror.server.startup import configure_command_logging

serve_app = typer.Typer(help="stablemirror: OCI registry and pull-through mirror",
                        no_args_is_help=True)


@serve_app.callback()
def _group() -> None:
    """A group of one: `serve` stays a subcommand, as in cli/main.py."""


LogFormatOpt = Annotated[Literal["text", "json"] | None,
                         typer.Option(help="log lines as text or one JSON object each")]
LogLevelOpt = Annotated[Literal["debug", "info", "warning", "error"] | None,
                        typer.Option(help="least severe level logged (default info)")]


@serve_app.command("serve")
def serve(
    listen: Annotated[str | None, typer.Option(help="HOST:PORT (default 127.0.0.1:5000)")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    workers: Annotated[int | None, typer.Option(
        help="processes, at least 1; default: CPU count (node: 1)")] = None,
    role: Annotated[Role | None, typer.Option(
        help="placement: center (default), edge or node; edge and node need an upstream")
    ] = None,
    log_format: LogFormatOpt = None,
    log_level: LogLevelOpt = None,
    upstream: Annotated[list[str] | None, typer.Option(
        help="proxy every repository to this registry URL; repeat for backups, in order")
    ] = None,
    auth: Annotated[bool, typer.Option(
        "--auth", help="require tokens (docs/auth.md); STABLEMIRROR_ADMIN_PASSWORD creates "
        "`admin` on first start")] = False,
    p2p: Annotated[bool, typer.Option(
        "--p2p", help="node: pull blob misses from the cluster's swarm (docs/p2p.md)")
    ] = False,
) -> None:
    """Run the registry."""
    from stablemirror.server.prefork import serve as run

    settings = load_settings(config, listen=listen, data_dir=data_dir, workers=workers,
                             role=role, log_format=log_format, log_level=log_level,
                             upstream=upstream or None,
                             auth={"enabled": True} if auth else None,
                             p2p={"enabled": True} if p2p else None)
    configure_command_logging(settings)
    run(settings)
