"""`vmshadow tmrs`: TMR files, and the TM that enforces them (apply, diff, history, rollback)."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from vmshadow.app.review import rollback_version
from vmshadow.app.tm import (
    DEFAULT_BRIDGE,
    DEFAULT_DB,
    ApplyResult,
    TMRSetDiff,
    TMSettings,
    apply_tmrset,
    diff_tmrset,
    tmr_history,
)
from vmshadow.cli.analyze import db_url
from vmshadow.cli.output import console, errors, fail, print_json
from vmshadow.config.tmr_file import load_tmr_file
from vmshadow.domain.codec import tmrset_to_json
from vmshadow.domain.errors import VmshadowError

app = typer.Typer(help="TMR files and the TM: check, apply, diff, history, rollback.", no_args_is_help=True)

SHADOWED_LISTED = 5  # repeats named after an apply; `tmrs check` names them all

FileArg = Annotated[Path, typer.Argument(help="TMR file (YAML).")]
DbOption = Annotated[str, typer.Option("--db", help="Where versions are kept: a SQLite file path or a database URL.")]
BridgeOption = Annotated[
    list[str] | None,
    typer.Option("--bridge", help=f"Bridge whose ports vmshadow manages (repeatable; default {DEFAULT_BRIDGE})."),
]
NetnsOption = Annotated[
    str | None, typer.Option("--netns", help="Run nft inside this network namespace (ip netns exec).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _settings(db: str, bridges: list[str] | None, netns: str | None) -> TMSettings:
    return TMSettings(db_url=db_url(db), bridges=tuple(bridges or (DEFAULT_BRIDGE,)), netns=netns)


@app.command()
def check(
    path: FileArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the parsed TMRSet as JSON.")] = False,
) -> None:
    """Validate a TMR file; every error is printed with file, line and field (exit 2)."""
    try:
        tmrset = load_tmr_file(path)
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(tmrset_to_json(tmrset))
        return
    console.print(
        f"[green]ok[/] {path}: {len(tmrset.tmrs)} TMRs, {len(tmrset.groups)} groups, {len(tmrset.vmns)} VMNs, "
        f"default {tmrset.default_action}"
    )
    for repeat, earlier in tmrset.repeats(datetime.now(UTC)).items():
        console.print(
            f"[yellow]note[/] TMR {repeat} never matches: {earlier} comes first with the same source, destination, "
            "protocol and ports, and lasts at least as long",
            highlight=False,
        )


@app.command()
def apply(
    path: FileArg,
    db: DbOption = DEFAULT_DB,
    bridge: BridgeOption = None,
    netns: NetnsOption = None,
    comment: Annotated[str | None, typer.Option("--comment", help="Why; kept in the history.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Put a TMR file in force as a new version, in one nftables transaction (exit 3 if the kernel refuses)."""
    try:
        tmrset = load_tmr_file(path)
        result = apply_tmrset(_settings(db, bridge, netns), tmrset, comment=comment or f"applied {path}")
    except VmshadowError as exc:
        fail(exc)
    _print_applied(result, as_json)


@app.command()
def diff(
    path: FileArg,
    db: DbOption = DEFAULT_DB,
    bridge: BridgeOption = None,
    netns: NetnsOption = None,
    as_json: JsonOption = False,
) -> None:
    """What applying a TMR file would change, TMR by TMR, relative to the version in force."""
    try:
        result = diff_tmrset(_settings(db, bridge, netns), load_tmr_file(path))
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(result.to_json())
        return
    _print_diff(result)


@app.command()
def history(
    db: DbOption = DEFAULT_DB,
    bridge: BridgeOption = None,
    netns: NetnsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every version applied, oldest first; * marks the one the kernel holds."""
    try:
        result = tmr_history(_settings(db, bridge, netns))
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(result.to_json())
        return
    if result.kernel_error:
        errors.print(f"[yellow]warning:[/] cannot tell the version in force: {result.kernel_error}", highlight=False)
    if not result.entries:
        console.print("No versions yet: `vmshadow tmrs apply FILE` makes the first.")
        return
    for e in result.entries:
        mark = "*" if e.in_force else " "
        console.print(
            f"{mark} {e.version:>4}  {e.created_at:%Y-%m-%d %H:%M:%S}Z  {e.author:<12} {e.tmrs:>6} TMRs  {e.comment}",
            highlight=False,
            markup=False,
        )


@app.command()
def rollback(
    version: Annotated[int, typer.Argument(help="The version to put back in force.")],
    db: DbOption = DEFAULT_DB,
    bridge: BridgeOption = None,
    netns: NetnsOption = None,
    as_json: JsonOption = False,
    actor: Annotated[str, typer.Option("--actor", help="Who rolls back (default: the OS user).")] = "",
) -> None:
    """Put an earlier version back in force, as a new version; applied proposals whose rules that takes out become
    rolled_back (audited), which lowers their recommenders' trust."""
    try:
        result, moved = rollback_version(_settings(db, bridge, netns), version, actor=actor or getpass.getuser())
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json({**result.to_json(), "rolled_back_proposals": [p.id for p in moved]})
        return
    _print_applied(result, False)
    for p in moved:
        console.print(f"proposal {p.id} rolled back ({p.recommender})", highlight=False)


def _print_applied(result: ApplyResult, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
        return
    r = result.report
    left_out = r.tmrs - r.tmrs_in_force
    note = f" ({left_out} TMRs expired or never matching, left out)" if left_out else ""
    console.print(
        f"[green]version {result.version}[/] in force: {r.rules} rules for {r.tmrs_in_force} TMRs{note}, "
        f"{len(r.ports)} bridge ports",
        highlight=False,
    )
    if r.shadowed:
        listed = ", ".join(r.shadowed[:SHADOWED_LISTED]) + (", …" if len(r.shadowed) > SHADOWED_LISTED else "")
        console.print(
            f"[yellow]{len(r.shadowed)} TMRs can never match[/]: an earlier TMR with the same source, destination, "
            f"protocol and ports decides first ({listed}); `vmshadow tmrs check FILE` names it",
            highlight=False,
        )


def _print_diff(result: TMRSetDiff) -> None:
    against = f"version {result.in_force}" if result.in_force is not None else "nothing in force"
    if result.empty:
        console.print(f"No change against {against}.")
        return
    console.print(f"Against {against}:", highlight=False)
    for t in result.added:
        console.print(f"  [green]+[/] {t['id']}  {_describe(t)}", highlight=False)
    for t in result.removed:
        console.print(f"  [red]-[/] {t['id']}  {_describe(t)}", highlight=False)
    for c in result.changed:
        fields = ", ".join(f"{f}: {c.before.get(f)!r} -> {c.after.get(f)!r}" for f in c.fields)
        console.print(f"  [yellow]~[/] {c.id}  {fields}", highlight=False)
    for line in result.other:
        console.print(f"  [yellow]~[/] {line}", highlight=False)


def _describe(t: dict[str, object]) -> str:
    ports = t.get("ports") or []
    where = f"/{','.join(map(str, ports))}" if isinstance(ports, list) and ports else ""
    return f"{t['action']} {t['src']} -> {t['dst']} {t['protocol']}{where} (priority {t['priority']})"
