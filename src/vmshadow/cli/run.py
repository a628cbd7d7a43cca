"""`vmshadow run`: the embedded service (capture -> flows -> detectors -> proposals), until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from vmshadow.app.adoption import teach_in_force
from vmshadow.app.embedded import Periodic
from vmshadow.app.export_audit import AUDIT_POSITION, AuditExport
from vmshadow.app.exporting import Exporter
from vmshadow.app.paths import DEFAULT_STATUS
from vmshadow.app.service import (
    KEEP_BUDGET,
    ServiceOptions,
    build_service,
    cleanup,
    enforce,
    measuring,
    tm_settings,
    watched_vmns,
)
from vmshadow.app.sweeper import sweep_expired
from vmshadow.capture.budget import CopyBudget
from vmshadow.cli.analyze import db_url
from vmshadow.cli.copy_budget import COPY_BUDGET_HELP
from vmshadow.cli.output import console, fail
from vmshadow.config.settings import Settings, load_settings
from vmshadow.config.tmr_file import load_tmr_file
from vmshadow.domain.errors import VmshadowError
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import Proposal
from vmshadow.domain.tmr import TMRSet
from vmshadow.intel.plain_list import load_plain_list

_shown: set[str] = set()

AUDIT_EVERY_S = 2.0  # how often decisions and outcomes recorded elsewhere are looked for
SWEEP_EVERY_S = 30.0  # the kernel already stopped an expired rule: the review log may lag a little


def _show(p: Proposal) -> None:
    if p.id in _shown:  # the same proposal gaining evidence: one line, not the whole block again
        console.print(
            f"  updated {p.id}: score {p.score:.2f}, {len(p.evidence.finding_ids)} findings, "
            f"{p.impact.newly_blocked_flows} recorded flows newly blocked",
            highlight=False,
        )
        return
    _shown.add(p.id)
    what = p.rule.describe() if p.rule is not None else p.summary
    console.print(f"[bold]proposal[/] {p.kind} {p.id} score {p.score:.2f}: {what}", highlight=False)
    console.print(f"  evidence {len(p.evidence.finding_ids)} findings, {len(p.evidence.community_ids)} flows; "
                  f"{p.impact.newly_blocked_flows} recorded flows newly blocked", highlight=False)  # fmt: skip


def run(
    bridge: Annotated[
        str | None, typer.Option("--bridge", help="Watch the VMNs on this bridge (default: the lab).")
    ] = None,
    mapping: Annotated[Path | None, typer.Option("--vmn-names", help="Interface -> VMN name map (YAML).")] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="TMR file: put in force on the bridge at start (a new version).")
    ] = None,
    intel: Annotated[list[Path] | None, typer.Option("--intel", help="Indicator list, repeatable.")] = None,
    db: Annotated[str, typer.Option("--db", help="SQLite file path or database URL.")] = "var/vmshadow.db",
    both_directions: Annotated[
        bool, typer.Option("--both-directions", help="Also copy what VMNs receive (real bridges only).")
    ] = False,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds.")] = None,
    status: Annotated[Path, typer.Option("--status", help="Where live health is written.")] = DEFAULT_STATUS,
    copy_budget: Annotated[
        str | None,
        typer.Option("--copy-budget", help=COPY_BUDGET_HELP + " Default: each shadow port keeps the budget it has."),
    ] = None,
    remove_on_exit: Annotated[
        bool, typer.Option("--cleanup", help="Remove the shadow ports on exit (default: they stay).")
    ] = False,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="Settings file (YAML): guard-rails, and export sinks for what is stored."),
    ] = None,
) -> None:
    """Run the embedded service: shadow ports -> flows -> detectors -> proposals, stored as they come.

    Stops cleanly on SIGINT or SIGTERM. Shadow ports and the TMRs in force stay on exit unless --cleanup is given
    (a restart finds them instead of duplicating them; temporary TMRs still expire in the kernel).
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    exporter: Exporter | None = None
    try:
        settings = load_settings(settings_file) if settings_file is not None else Settings()
        tmrset = load_tmr_file(rules) if rules is not None else TMRSet()
        indicators: list[Indicator] = []
        for path in intel or []:
            indicators.extend(load_plain_list(path))
        options = ServiceOptions(
            db_url=db_url(db),
            bridge=bridge,
            mapping_file=mapping,
            both_directions=both_directions,
            status_path=status,
            copy_budget=KEEP_BUDGET if copy_budget is None else CopyBudget.parse(copy_budget, field="--copy-budget"),
        )
        if settings.export.sinks:
            exporter = Exporter(settings.export)  # every sink set up before the service starts
        watched = watched_vmns(options)
        if rules is not None:
            applied = enforce(options, tmrset, watched)
            console.print(f"TMRs from {rules} in force as version {applied.version}", highlight=False)
        else:  # TMRs put in force earlier stay; they learn the VMNs watched now, so proposals naming them apply
            taught = teach_in_force(tm_settings(options), [w.vmn for w in watched])
            if taught is not None:
                console.print(f"the TMRs in force now know every watched VMN (version {taught.version})")
        service = build_service(
            options,
            tmrset,
            watched,
            indicators=tuple(indicators),
            on_proposal=_show,
            on_stored=exporter.publish_stored if exporter is not None else lambda findings, proposals: None,
            guard_rails=settings.guard_rails,
            impact_window=settings.refinement.impact_window,
            intel=settings.intel,
        )
    except VmshadowError as exc:
        if exporter is not None:
            exporter.close()
        fail(exc)
    # expired rules leave the review log's `applied` first, so measuring records their neutral outcome, not hits
    sweep = Periodic("review.sweep", SWEEP_EVERY_S, lambda: sweep_expired(options.db_url))
    service.periodic = (*service.periodic, sweep, measuring(options))
    if exporter is not None:
        try:
            audit = AuditExport(service.store, exporter.publish, settings.export.queue_dir / AUDIT_POSITION)
        except VmshadowError as exc:
            exporter.close()
            fail(exc)
        service.periodic = (*service.periodic, Periodic("export.audit", AUDIT_EVERY_S, audit.run))
        exporter.start()
        console.print(f"exporting to {', '.join(exporter.sink_names)}", highlight=False)
    names = ", ".join(f"{w.vmn.name} ({w.port.shadow_interface})" for w in watched)
    console.print(f"watching {len(watched)} VMN(s): {names}; health in {status}", highlight=False)
    if duration is not None:
        threading.Timer(duration, stop.set).start()
    try:
        service.run(stop)
    finally:
        if exporter is not None:
            exporter.close()  # what is still queued is delivered after the next start
        if remove_on_exit:
            cleanup(options, watched, enforced=rules is not None)
        kept = "shadow ports and TMRs removed" if remove_on_exit else "shadow ports and TMRs stay in force"
        console.print(f"stopped; {kept}")
