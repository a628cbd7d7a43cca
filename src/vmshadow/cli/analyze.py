"""`vmshadow analyze`: offline analysis of captures against a rules file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from vmshadow.app.offline import AnalysisReport, analyze_captures, with_vmns
from vmshadow.cli.output import console, errors, fail, print_json
from vmshadow.config.tmr_file import load_tmr_file
from vmshadow.config.vmn_file import load_vmn_file
from vmshadow.domain.codec import finding_to_json, proposal_to_json
from vmshadow.domain.errors import VmshadowError
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import ProposalKind
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
) -> None:
    """Analyse captures offline: flows, findings, and proposed TMR changes with evidence and impact."""
    try:
        tmrset = load_tmr_file(rules)
        if vmns is not None:
            tmrset = with_vmns(tmrset, load_vmn_file(vmns))
        indicators: list[Indicator] = []
        for path in intel or []:
            indicators.extend(load_plain_list(path))
        if as_json:
            report = analyze_captures(
                pcaps, tmrset, now=datetime.now(UTC), indicators=indicators, db_url=db and db_url(db)
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
                )
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(
            {
                "flows": len(report.flows),
                "findings": [finding_to_json(f) for f in report.findings],
                "proposals": [proposal_to_json(p) for p in report.proposals],
            }
        )
    else:
        _summary(report)


def _summary(report: AnalysisReport) -> None:
    console.print(
        f"[bold]{len(report.captures)}[/] capture(s), [bold]{len(report.flows)}[/] flows, "
        f"[bold]{len(report.findings)}[/] findings, [bold]{len(report.proposals)}[/] proposals"
    )
    if report.findings:
        table = Table(title="Findings", title_justify="left")
        for col in ("detector", "severity", "score", "summary"):
            table.add_column(col)
        for f in report.findings:
            table.add_row(f.detector, str(f.severity), f"{f.score:.2f}", f.summary)
        console.print(table)
    if not report.proposals:
        console.print("No proposals: nothing seen calls for a TMR change.")
        return
    table = Table(title="Proposals (state: proposed — an administrator decides)", title_justify="left")
    for col in ("id", "kind", "rule", "score", "evidence", "newly blocked"):
        table.add_column(col)
    for p in report.proposals:
        rule = p.rule.describe() if p.rule is not None else p.summary
        blocked = "-" if p.kind is ProposalKind.ALERT else str(p.impact.newly_blocked_flows)
        evidence = f"{len(p.evidence.finding_ids)} findings, {len(p.evidence.community_ids)} flows"
        table.add_row(p.id, str(p.kind), rule, f"{p.score:.2f}", evidence, blocked)
    console.print(table)
