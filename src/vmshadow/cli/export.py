"""`vmshadow export test SINK`: send one harmless event through a configured sink and say what happened.

Exit codes: 0 delivered; 1 the receiver refused it for good (HTTP 4xx: retrying cannot help); 2 bad input (the
settings file, an unknown sink); 3 the receiver is unavailable (the queue would keep the event and retry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmshadow.app.exporting import ExportTestReport, export_test
from vmshadow.cli.output import EXIT_UNAVAILABLE, console, errors, fail, print_json
from vmshadow.config.settings import load_settings
from vmshadow.domain.errors import VmshadowError

EXIT_REFUSED = 1

app = typer.Typer(help="SIEM export: check the configured sinks.", no_args_is_help=True)


@app.command("test")
def send_test(
    sink: Annotated[str, typer.Argument(help="The sink's name in the settings file.", show_default=False)],
    settings_file: Annotated[Path, typer.Option("--settings", help="Settings file (YAML) that defines the sink.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Send a sample event (documentation addresses, rule export.test) straight through SINK, without its queue."""
    try:
        report = export_test(load_settings(settings_file), sink)
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(report.to_json())
    else:
        _show(report)
    if not report.delivered:
        raise typer.Exit(EXIT_UNAVAILABLE if report.retryable else EXIT_REFUSED)


def _show(report: ExportTestReport) -> None:
    if report.delivered:
        console.print(
            f"delivered: test event {report.event_id} through {report.type} sink {report.sink} "
            f"in {report.elapsed_s:.2f} s",
            highlight=False,
        )
        if not report.filter_accepts:
            console.print("  note: this sink's filter would not take the test event in normal operation")
        return
    kind = "retryable: the queue would keep events and try again" if report.retryable else "not retryable"
    errors.print(f"not delivered ({kind}): {report.error}", highlight=False, markup=False)
