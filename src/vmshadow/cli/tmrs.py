"""`vmshadow tmrs`: TMR files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmshadow.cli.output import console, fail, print_json
from vmshadow.config.tmr_file import load_tmr_file
from vmshadow.domain.codec import tmrset_to_json
from vmshadow.domain.errors import VmshadowError

app = typer.Typer(help="TMR files: check them.", no_args_is_help=True)


@app.command()
def check(
    path: Annotated[Path, typer.Argument(help="TMR file (YAML).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the parsed TMRSet as JSON.")] = False,
) -> None:
    """Validate a TMR file; every error is printed with file, line and field (exit 2)."""
    try:
        tmrset = load_tmr_file(path)
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(tmrset_to_json(tmrset))
        return
    console.print(
        f"[green]ok[/] {path}: {len(tmrset.tmrs)} TMRs, {len(tmrset.groups)} groups, {len(tmrset.vmns)} VMNs, "
        f"default {tmrset.default_action}"
    )
