"""`vmshadow vmns`: each VMN's mirror health, from the running service's status file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vmshadow.app.paths import DEFAULT_STATUS
from vmshadow.cli.output import console, errors, print_json

COLUMNS = (
    ("vmn", "VMN"),
    ("shadow_port", "shadow port"),
    ("mirrored_packets", "mirrored pkts"),
    ("shed_packets", "shed copies"),
    ("analysed_packets", "analysed pkts"),
    ("socket_dropped_packets", "socket drops"),
    ("queue_dropped_flows", "queue drops (flows)"),
    ("flows", "flows"),
)


def vmns(
    status: Annotated[Path, typer.Option("--status", help="Status file written by `vmshadow run`.")] = DEFAULT_STATUS,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-VMN mirror health: packets mirrored (tc), shed by the copy budget, analysed and dropped (socket), flows
    dropped (queue)."""
    try:
        document: dict[str, Any] = json.loads(status.read_text())
    except FileNotFoundError:
        errors.print(f"no status at {status}: is `vmshadow run` running?", highlight=False)
        raise typer.Exit(3) from None
    if as_json:
        print_json(document)
        return
    table = Table(title=f"VMN mirror health at {document.get('updated_at')}", title_justify="left")
    for _, title in COLUMNS:
        table.add_column(title)
    for row in document.get("vmns", []):
        table.add_row(*(str(row.get(key, "-")) for key, _ in COLUMNS))  # "-": a service that does not report it
    console.print(table)
    console.print("mirrored counts tc's copies; shed counts what the copy budget passed on without a copy (the live "
                  "packet always goes on); analysed + socket drops count what the meter read (GSO packets count once "
                  "in both).")  # fmt: skip
