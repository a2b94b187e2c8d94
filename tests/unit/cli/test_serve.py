"""`serve`'s own argparse parser (cli/serve.py): every option reaches the settings, and a
mistake is one ServeUsageError line naming the option; cli/main.py passes `serve` through."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stablemirror.cli.main import app
from stablemirror.cli.serve import ServeUsageError, serve_parser


def test_every_option_is_parsed() -> None:
    args = serve_parser().parse_args([
        "--listen", "127.0.0.1:5001", "--data-dir", "/d", "--config", "/c.yaml",
        "--workers", "3", "--role", "node", "--log-format", "json", "--log-level", "error",
        "--upstream", "http://a", "--upstream", "http://b", "--auth", "--p2p"])
    assert (args.listen, args.data_dir, args.config, args.workers) == (
        "127.0.0.1:5001", Path("/d"), Path("/c.yaml"), 3)
    assert (args.role, args.log_format, args.log_level) == ("node", "json", "error")
    assert args.upstream == ["http://a", "http://b"] and args.auth and args.p2p
    defaults = serve_parser().parse_args([])
    assert defaults.upstream is None and not defaults.auth and defaults.workers is None


@pytest.mark.parametrize(("argv", "named"), [
    (["--workers", "many"], "'many' is not an integer"),
    (["--role", "hub"], "'hub'"),
    (["--listen"], "--listen"),
    (["--lis", "127.0.0.1:1"], "--lis"),  # no abbreviations: --lis is not --listen
    (["extra"], "extra"),
])
def test_a_mistake_is_one_line(argv: list[str], named: str) -> None:
    with pytest.raises(ServeUsageError) as err:
        serve_parser().parse_args(argv)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_the_full_cli_lists_serve_and_passes_its_arguments_through() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["--help"])
    assert "serve" in listing.output and "Run the registry" in listing.output
    result = runner.invoke(app, ["serve", "--workers", "many"])
    assert isinstance(result.exception, ServeUsageError)
    assert "'many' is not an integer" in str(result.exception)
