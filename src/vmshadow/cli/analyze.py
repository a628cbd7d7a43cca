"""`vmshadow analyze`: offline analysis of captures against a rules file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from vmshadow.app.exporting import Exporter
from vmshadow.app.offline import AnalysisReport, analyze_captures, with_vmns
from vmshadow.cli.output import console, errors, fail, print_json
from vmshadow.config.settings import Settings, load_settings
from vmshadow.config.tmr_file import load_tmr_file
from vmshadow.config.vmn_file import load_vmn_file
from vmshadow.domain.codec import finding_to_json, proposal_to_json
from vmshadow.domain.errors import VmshadowError
from vmshadow.domain.finding import Severity
from vmshadow.domain.indicator import Indicator
from vmshadow.intel.plain_list import load_plain_list


def db_url(value: str) -> str:
    """A SQLAlchemy URL as given, or a file path for the embedded SQLite store."""
    return value if "://" in value else f"sqlite:///{Path(value).resolve()}"


def analyze(
    pcaps: Annotated[list[Path], typer.Argument(help="Capture files (pcap or pcapng).", show_default=False)],
    rules: Annotated[Path, typer.Option("--rules", help="TMR file (YAML).")],
    vmns: Annotated[Path | None, typer.Option("--vmns", help="VMN map file (YAML): MAC or IP -> VMN.")] = None,
    intel: Annotated[
        list[Path] | None, typer.Option("--intel", help="Indicator list (IPs, CIDRs, domains), repeatable.")
    ] = None,
    db: Annotated[str | None, typer.Option("--db", help="Store results: a SQLite file path or a database URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="Settings file (YAML): guard-rails, and export sinks the results are sent to."),
    ] = None,
) -> None:
    """Analyse captures offline: flows, findings, and proposed TMR changes with evidence and impact."""
    exporter: Exporter | None = None
    try:
        settings = load_settings(settings_file) if settings_file is not None else Settings()
        tmrset = load_tmr_file(rules)
        if vmns is not None:
            tmrset = with_vmns(tmrset, load_vmn_file(vmns))
        indicators: list[Indicator] = []
        for path in intel or []:
            indicators.extend(load_plain_list(path))
        if settings.export.sinks:
            exporter = Exporter(settings.export)  # every sink set up before anything is analysed
        if as_json:
            report = analyze_captures(
                pcaps,
                tmrset,
                now=datetime.now(UTC),
                indicators=indicators,
                db_url=db and db_url(db),
                guard_rails=settings.guard_rails,
                impact_window=settings.refinement.impact_window,
            )
        else:
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=errors, transient=True
            ) as bar:
                task = bar.add_task("metering flows", total=None)
                report = analyze_captures(
                    pcaps,
                    tmrset,
                    now=datetime.now(UTC),
                    indicators=indicators,
                    db_url=db and db_url(db),
                    progress=lambda n: bar.update(task, description=f"metering and analysing: {n} flows"),
                    guard_rails=settings.guard_rails,
                    impact_window=settings.refinement.impact_window,
                )
        exported = _export(exporter, report) if exporter is not None else None
    except VmshadowError as exc:
        if exporter is not None:
            exporter.close()
        fail(exc)
    if as_json:
        out: dict[str, object] = {
            "flows": len(report.flows),
            "findings": [finding_to_json(f) for f in report.findings],
            "proposals": [proposal_to_json(p) for p in report.proposals],
        }
        if exported is not None:
            out["export"] = exported
        print_json(out)
    else:
        _summary(report)
        for name, row in (exported or {}).items():
            errors.print(
                f"export {name}: {row['queued']} queued, {row['delivered']} delivered, {row['depth']} waiting"
                + (f" (last error: {row['last_error']})" if row["last_error"] else ""),
                highlight=False,
                markup=False,
            )


EXPORT_DRAIN_S = 30.0


def _export(exporter: Exporter, report: AnalysisReport) -> dict[str, dict[str, object]]:
    """Queue the findings and proposals for every sink, then deliver what can be delivered in `EXPORT_DRAIN_S`;
    what is left waits in the queue for the next `vmshadow run` or `analyze --settings`."""
    try:
        queued = exporter.publish_stored(report.findings, report.proposals)
        delivered = exporter.drain(timeout_s=EXPORT_DRAIN_S)
        stats = exporter.stats()
    finally:
        exporter.close()
    return {
        name: {
            "queued": queued[name],
            "delivered": delivered[name].delivered,
            "depth": stats[name].depth,
            "last_error": delivered[name].last_error,
        }
        for name in exporter.sink_names
    }


def _summary(report: AnalysisReport) -> None:
    console.print(
        f"[bold]{len(report.captures)}[/] capture(s), [bold]{len(report.flows)}[/] flows, "
        f"[bold]{len(report.findings)}[/] findings, [bold]{len(report.proposals)}[/] proposals"
    )
    if report.findings:
        console.print("\n[bold]Findings[/]")
        for f in report.findings:
            colour = _SEVERITY_COLOUR.get(f.severity, "white")
            console.print(f"  [{colour}]{f.severity:<8}[/] {f.score:.2f}  {f.detector}: {f.summary}", highlight=False)
    if not report.proposals:
        console.print("\nNo proposals: nothing seen calls for a TMR change.")
        return
    console.print("\n[bold]Proposals[/] (state proposed: an administrator decides; nothing is enforced)")
    for p in report.proposals:
        console.print(f"\n  [bold]{p.kind}[/] {p.id}  score {p.score:.2f}", highlight=False)
        if p.rule is not None:
            console.print(f"    rule      {p.rule.describe()}  (priority {p.rule.priority})", highlight=False)
            console.print(
                f"    impact    {p.impact.newly_blocked_flows} of {p.impact.flows_replayed} recorded flows newly "
                "blocked",
                highlight=False,
            )
        else:
            console.print(f"    alert     {p.summary}", highlight=False)
        console.print(
            f"    evidence  {len(p.evidence.finding_ids)} findings, {len(p.evidence.community_ids)} flows",
            highlight=False,
        )


_SEVERITY_COLOUR = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "white",
}
