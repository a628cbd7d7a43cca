"""The `vmshadow` command."""

from __future__ import annotations

import typer

from vmshadow import __version__
from vmshadow.cli import export, intel, lab, outcomes, proposals, recommenders, tmrs
from vmshadow.cli.analyze import analyze
from vmshadow.cli.api import api
from vmshadow.cli.run import run
from vmshadow.cli.vmns import vmns

app = typer.Typer(
    name="vmshadow",
    help="See and tighten what virtual machines send: shadow analysis and reviewed TMR proposals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(analyze)
app.add_typer(tmrs.app, name="tmrs")
app.add_typer(lab.app, name="lab")
app.add_typer(proposals.app, name="proposals")
app.add_typer(outcomes.app, name="outcomes")
app.add_typer(recommenders.app, name="recommenders")
app.add_typer(intel.app, name="intel")
app.add_typer(export.app, name="export")
app.command()(run)
app.command()(vmns)
app.command()(api)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
