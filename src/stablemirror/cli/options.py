"""What several command groups share: the options that name a data dir, a config file or a
running server, and the table of counts that maintenance commands print."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # rich on use only: the light `pack` and `copy` import these options
    from rich.table import Table

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="blobs + index live here")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="admin API of a running server")]
UserOpt = Annotated[str, typer.Option("--username", envvar="STABLEMIRROR_USERNAME",
                                      help="admin login for --url")]
InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="plain HTTP to a registry that is not on localhost")]


def registry_credentials() -> tuple[str, str] | None:
    """A remote registry's login: STABLEMIRROR_REGISTRY_USERNAME / _PASSWORD, if set."""
    user = os.environ.get("STABLEMIRROR_REGISTRY_USERNAME")
    password = os.environ.get("STABLEMIRROR_REGISTRY_PASSWORD")
    return (user, password or "") if user else None


def counts_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """What a maintenance run did: one row per kind of thing, its count on the right."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, count in rows:
        table.add_row(what, count)
    return table
