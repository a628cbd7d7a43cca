"""`vmshadow export test SINK` sends one harmless event through a configured sink and says what happened;
`vmshadow export status` shows each sink's queue (read-only: a running service owns the queues).

Exit codes of `test`: 0 delivered; 1 the receiver refused it for good (HTTP 4xx: retrying cannot help); 2 bad input (the
settings file, an unknown sink); 3 the receiver is unavailable (the queue would keep the event and retry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vmshadow.app.export_audit import AUDIT_POSITION, read_audit_position
from vmshadow.app.exporting import ExportTestReport, SinkStats, export_stats, export_test
from vmshadow.cli.output import EXIT_UNAVAILABLE, console, errors, fail, print_json
from vmshadow.config.settings import FileSinkSettings, SinkSettings, SyslogSinkSettings, load_settings
from vmshadow.domain.errors import VmshadowError

EXIT_REFUSED = 1

app = typer.Typer(help="SIEM export: check the configured sinks.", no_args_is_help=True)


def target_of(sink: SinkSettings) -> str:
    t = sink.target
    if isinstance(t, FileSinkSettings):
        return str(t.path)
    if isinstance(t, SyslogSinkSettings):
        return f"{t.transport}://{t.host}:{t.port} ({t.format})"
    return t.url


@app.command("status")
def status(
    settings_file: Annotated[Path, typer.Option("--settings", help="Settings file (YAML) that defines the sinks.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each sink's queue: events waiting (and the oldest one's age), delivered, failed attempts, possible
    duplicates, dead letters; and how far the audit log (decisions, outcomes) has been exported."""
    try:
        settings = load_settings(settings_file)
    except VmshadowError as exc:
        fail(exc)
    stats = export_stats(settings.export)
    position = read_audit_position(settings.export.queue_dir / AUDIT_POSITION)
    rows = [
        {"sink": s.name, "type": str(s.type), "target": target_of(s), "queue": str(settings.export.queue_path(s.name)),
         "started": stats[s.name] is not None, **_counts(stats[s.name])}
        for s in settings.export.sinks
    ]  # fmt: skip
    if as_json:
        print_json({"sinks": rows, "audit_exported_upto": position})
        return
    if not rows:
        console.print(f"no sinks configured in {settings_file}", highlight=False)
        return
    table = Table("sink", "type", "target", "waiting", "oldest", "delivered", "failures", "duplicates", "dead")
    for r in rows:
        oldest = r["oldest_age_s"]
        table.add_row(
            str(r["sink"]), str(r["type"]), str(r["target"]),
            str(r["depth"]) if r["started"] else "not started", "-" if oldest is None else f"{oldest:.0f} s",
            str(r["delivered"]), str(r["failures"]), str(r["duplicates"]), str(r["dead"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"audit log exported up to decision {position['decisions']}, outcome {position['outcomes']}", highlight=False
    )


def _counts(stats: SinkStats | None) -> dict[str, int | float | None]:
    if stats is None:  # the service has not created this sink's queue yet: nothing queued, nothing sent
        return {"depth": 0, "oldest_age_s": None, "delivered": 0, "failures": 0, "duplicates": 0, "dead": 0}
    return {
        "depth": stats.depth,
        "oldest_age_s": None if stats.oldest_age_s is None else round(stats.oldest_age_s, 1),
        "delivered": stats.delivered,
        "failures": stats.failures,
        "duplicates": stats.duplicates,
        "dead": stats.dead,
    }


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
