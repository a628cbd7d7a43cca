"""`vmshadow outcomes`: what happened after proposals were applied; false-positive reports."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.table import Table

from vmshadow.app.feedback import list_outcomes, report_false_positive
from vmshadow.app.tm import DEFAULT_DB
from vmshadow.cli.analyze import db_url
from vmshadow.cli.output import console, fail, print_json
from vmshadow.domain.errors import VmshadowError
from vmshadow.domain.outcome import outcome_to_json

app = typer.Typer(help="Outcomes of applied proposals: list them, report a false positive.", no_args_is_help=True)

Db = Annotated[str, typer.Option("--db", help="SQLite file path or database URL.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def report(
    proposal_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why it is a false positive (required).")] = "",
    db: Db = DEFAULT_DB,
    actor: Annotated[str, typer.Option("--actor", help="Who reports (default: the OS user).")] = "",
    as_json: Json = False,
) -> None:
    """Report an applied proposal as a false positive: it lowers its recommender's trust."""
    try:
        outcome = report_false_positive(db_url(db), proposal_id, actor=actor or getpass.getuser(), reason=reason)
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(outcome_to_json(outcome))
    else:
        console.print(f"{proposal_id}: false positive recorded for recommender {outcome.recommender} ({outcome.id})")


@app.command("list")
def list_(
    proposal: Annotated[str | None, typer.Option("--proposal", help="Only outcomes of this proposal.")] = None,
    recommender: Annotated[str | None, typer.Option("--recommender", help="Only this recommender's.")] = None,
    db: Db = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Outcomes in the order they were recorded."""
    try:
        found = list_outcomes(db_url(db), recommender=recommender, proposal_id=proposal)
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json([outcome_to_json(o) for o in found])
        return
    table = Table(title=f"{len(found)} outcome(s)", title_justify="left")
    for col in ("observed", "proposal", "recommender", "kind", "polarity", "value", "actor", "detail"):
        table.add_column(col, overflow="fold")
    for o in found:
        table.add_row(
            f"{o.observed_at:%Y-%m-%d %H:%M:%S}", o.proposal_id, o.recommender, str(o.kind), str(o.polarity),
            f"{o.value:g}", o.actor, o.detail,
        )  # fmt: skip
    console.print(table)
