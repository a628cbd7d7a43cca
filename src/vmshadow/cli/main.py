"""The `vmshadow` command."""

from __future__ import annotations

import typer

from vmshadow import __version__
from vmshadow.cli import tmrs
from vmshadow.cli.analyze import analyze

app = typer.Typer(
    name="vmshadow",
    help="See and tighten what virtual machines send: shadow analysis and reviewed TMR proposals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(analyze)
app.add_typer(tmrs.app, name="tmrs")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
