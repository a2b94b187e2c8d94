"""The `stablemirror` command's entry point. `pack` and `unpack` are client commands that
need none of the server's command groups; importing those (cli/main.py: compose, api, ...)
costs about a second on a small machine, which a pack of a small directory would feel. So
they start from their own app (cli/pack.py `models_app`); so does `serve` (cli/serve.py,
without typer: a node's start-up time and memory, docs/footprint.md) and `copy` (cli/copy.py);
every other command, and `--help`, go to cli/main.py. Mistakes are one line either way.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:  # typer on use only: `serve` parses its options with argparse
    import typer

LIGHT_COMMANDS = ("pack", "unpack")
COPY_COMMAND = "copy"  # cli/copy.py: a client command too
SERVE_COMMAND = "serve"  # the server's own light start (cli/serve.py, docs/footprint.md)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in LIGHT_COMMANDS:
        from stablemirror.cli.pack import models_app

        run_one_line(models_app, prog_name="stablemirror")
    if len(sys.argv) > 1 and sys.argv[1] == COPY_COMMAND:
        from stablemirror.cli.copy import copy_app

        run_one_line(copy_app, prog_name="stablemirror")
    if len(sys.argv) > 1 and sys.argv[1] == SERVE_COMMAND:
        # No cyclic GC while the server imports and builds its app: each collection
        # walks the whole growing heap and finds next to nothing (~2,000 objects in
        # all), ~0.06 s of a node's start. server/prefork.py freezes what start-up made
        # and turns the collector back on before serving.
        gc.disable()
        run_serve(sys.argv[2:])
    from stablemirror.cli.main import main as full_main

    full_main()


def run_serve(argv: list[str]) -> NoReturn:
    """`stablemirror serve ARGS`; a mistake (an option, a setting, the listen address, the
    data dir) is one line, exit 2 for the command line and settings, 1 for the rest."""
    from stablemirror.cli.serve import ServeUsageError, serve
    from stablemirror.config import SettingsError
    from stablemirror.server.startup import StartupError

    try:
        serve(argv)
    except (ServeUsageError, SettingsError, StartupError) as err:
        _fail(str(err), getattr(err, "exit_code", 1))
    sys.exit(0)


def run_one_line(app: typer.Typer, prog_name: str | None = None,
                 known: tuple[type[Exception], ...] = ()) -> NoReturn:
    """Run `app`, every mistake one line. Not standalone: typer would draw a usage error
    as a box of several lines. `known`: errors with an `exit_code` of their own, said as
    they are. (typer==0.29.2 is pinned; _click is its vendored click.)"""
    import typer
    from typer._click.exceptions import ClickException, UsageError

    try:
        result = app(standalone_mode=False, prog_name=prog_name)
    except known as err:
        _fail(str(err), getattr(err, "exit_code", 1))
    except UsageError as err:
        where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        _fail(err.format_message() + where, err.exit_code)
    except ClickException as err:
        _fail(err.format_message(), err.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    print(f"stablemirror: error: {message}", file=sys.stderr)
    sys.exit(code)
