"""The `stablemirror` command's entry point. `pack` and `unpack` are client commands that
need none of the server's command groups; importing those (cli/main.py: compose, api, ...)
costs about a second on a small machine, which a pack of a small directory would feel. So
they start from their own app (cli/pack.py `models_app`); every other command, and
`--help`, go to cli/main.py. Mistakes are one line either way.
"""

from __future__ import annotations

import sys

LIGHT_COMMANDS = ("pack", "unpack")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in LIGHT_COMMANDS:
        import typer
        from typer._click.exceptions import ClickException, UsageError

        from stablemirror.cli.pack import models_app

        try:
            result = models_app(standalone_mode=False, prog_name="stablemirror")
        except UsageError as err:
            where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            _fail(err.format_message() + where, err.exit_code)
        except ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except typer.Abort:
            _fail("aborted", 1)
        sys.exit(result if isinstance(result, int) else 0)
    from stablemirror.cli.main import main as full_main

    full_main()


def _fail(message: str, code: int) -> None:
    print(f"stablemirror: error: {message}", file=sys.stderr)
    sys.exit(code)
