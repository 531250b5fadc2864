"""The Typer application every command module registers on, and the one-line error exit."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

app = typer.Typer(
    name="densitylab",
    help="Density estimation with normalizing flows (RealNVP, Glow) and kernel density estimation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on one line and exit with status 2 (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    sys.exit(2)


def _print_version(value: bool) -> None:
    if value:
        from densitylab import __version__

        typer.echo(f"densitylab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Density estimation with normalizing flows (RealNVP, Glow) and kernel density estimation.

    Run `densitylab COMMAND --help` for the options of each command.
    """
