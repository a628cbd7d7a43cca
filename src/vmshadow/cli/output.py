"""Shared CLI output: rich consoles, JSON printing and the bad-input exit path."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console

from vmshadow.domain.errors import InputError, VmshadowError

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error line must stay one line for grep and logs

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


def print_json(data: Any) -> None:
    # plain stdout, not rich: machine readers need exact JSON and no wrapping
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def fail(exc: VmshadowError) -> NoReturn:
    """Report an error on stderr and exit: 2 for bad input (every issue listed), 3 otherwise."""
    if isinstance(exc, InputError):
        errors.print(f"[bold red]error:[/] {len(exc.issues)} problem(s) in the input", highlight=False)
        for issue in exc.issues:
            errors.print(f"  {issue}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    errors.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(EXIT_UNAVAILABLE)
