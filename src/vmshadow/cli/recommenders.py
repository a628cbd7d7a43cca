"""`vmshadow recommenders`: trust per recommender, now and as it was."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from vmshadow.app.feedback import recommender_trust, recompute_trust
from vmshadow.app.tm import DEFAULT_DB
from vmshadow.cli.analyze import db_url
from vmshadow.cli.output import console, fail, print_json
from vmshadow.domain.errors import VmshadowError
from vmshadow.domain.outcome import trust_snapshot_to_json

app = typer.Typer(help="Trust per recommender (Beta posterior over its outcomes) and its history.")

Db = Annotated[str, typer.Option("--db", help="SQLite file path or database URL.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.callback(invoke_without_command=True)
def recommenders(
    db: Db = DEFAULT_DB,
    record: Annotated[bool, typer.Option("--record", help="Also store the trust computed now in the history.")] = False,
    as_json: Json = False,
) -> None:
    """Trust per recommender now, computed from every outcome on record, with its stored history."""
    try:
        if record:
            recompute_trust(db_url(db))
        found = recommender_trust(db_url(db))
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(
            [
                {
                    **trust_snapshot_to_json(r.current),
                    "history": [trust_snapshot_to_json(s) for s in r.history],
                }
                for r in found.values()
            ]
        )
        return
    table = Table(title=f"{len(found)} recommender(s)", title_justify="left")
    for col in ("recommender", "trust", "alpha", "beta", "outcomes", "history (oldest first)"):
        table.add_column(col, overflow="fold")
    for name, r in found.items():
        c = r.current
        history = " → ".join(f"{s.trust:.2f}" for s in r.history[-8:]) or "-"
        table.add_row(name, f"{c.trust:.2f}", f"{c.alpha:.2f}", f"{c.beta:.2f}", str(c.outcomes), history)
    console.print(table)
