"""`vmshadow intel`: import, list, sources, expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from vmshadow.app.intel import FeedFormat, expire, read_feed, retro_hunt, sources, store_import, valid_indicators
from vmshadow.app.tm import DEFAULT_DB
from vmshadow.cli.analyze import db_url
from vmshadow.cli.output import console, errors, fail, print_json
from vmshadow.domain.codec import finding_to_json, indicator_to_json, proposal_to_json
from vmshadow.domain.errors import VmshadowError

app = typer.Typer(help="Threat intel: import STIX/MISP/lists, list, sources, expire.", no_args_is_help=True)
Db = Annotated[str, typer.Option("--db", help="SQLite file path or database URL.")]


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A STIX 2.1 bundle, a MISP event (JSON), or a plain list.")],
    fmt: Annotated[FeedFormat, typer.Option("--format")] = FeedFormat.AUTO,
    source: Annotated[str | None, typer.Option("--source", help="Source name (default: the file name).")] = None,
    partial: Annotated[
        bool, typer.Option("--partial", help="Keep the valid part of a document with errors (errors listed).")
    ] = False,
    hunt_hours: Annotated[float, typer.Option("--hunt-hours", help="Retro-hunt window over archived flows.")] = 24,
    db: Db = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import indicators, then retro-hunt the archived flows with them.

    A document with any error is refused whole (exit 2, nothing stored) unless --partial.
    """
    try:
        result = read_feed(path, fmt, source or path.name)
        report = store_import(db_url(db), result, partial=partial)
        hunt = retro_hunt(
            db_url(db), list(result.indicators), now=datetime.now(UTC), window=timedelta(hours=hunt_hours)
        )
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(
            {
                "stored": report.stored,
                "skipped": [str(i) for i in report.skipped],
                "errors": [str(i) for i in report.errors],
                "retro_hunt": {
                    "flows_checked": hunt.flows_checked,
                    "findings": [finding_to_json(f) for f in hunt.findings],
                    "proposals": [proposal_to_json(p) for p in hunt.proposals],
                },
            }
        )
        return
    console.print(f"stored {report.stored} indicator(s) from {path}; skipped {len(report.skipped)}", highlight=False)
    for issue in report.errors:
        errors.print(f"  not kept: {issue}", highlight=False, markup=False)
    console.print(
        f"retro-hunt over {hunt.flows_checked} archived flows: {len(hunt.findings)} finding(s), "
        f"{len(hunt.proposals)} proposal(s)",
        highlight=False,
    )


@app.command("list")
def list_(db: Db = DEFAULT_DB, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Indicators valid now."""
    try:
        found = valid_indicators(db_url(db), datetime.now(UTC))
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json([indicator_to_json(i) for i in found])
        return
    for i in found:
        until = i.valid_until.isoformat() if i.valid_until else "-"
        console.print(f"{i.type:<6} {i.value:<40} {i.source:<24} conf {i.confidence:>3} until {until}", highlight=False)


@app.command("sources")
def sources_(db: Db = DEFAULT_DB, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Indicators per source: stored and valid now."""
    try:
        counts = sources(db_url(db), datetime.now(UTC))
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json({s: {"stored": n, "valid": v} for s, (n, v) in counts.items()})
        return
    for s, (n, v) in counts.items():
        console.print(f"{s:<32} {n:>8} stored {v:>8} valid", highlight=False)


@app.command("expire")
def expire_(db: Db = DEFAULT_DB) -> None:
    """Delete revoked indicators and those past valid_until."""
    try:
        gone = expire(db_url(db), datetime.now(UTC))
    except VmshadowError as exc:
        fail(exc)
    console.print(f"expired {gone} indicator(s)")
