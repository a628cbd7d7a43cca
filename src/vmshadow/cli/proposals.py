"""`vmshadow proposals`: the administrator's review of what the SAE proposed."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from vmshadow.app.review import (
    apply_proposal,
    decide_proposal,
    edit_proposal,
    list_proposals,
    rollback_proposal,
    show_proposal,
    stage_proposal,
)
from vmshadow.app.tm import DEFAULT_BRIDGE, DEFAULT_DB, ApplyResult, TMSettings
from vmshadow.cli.analyze import db_url
from vmshadow.cli.output import console, fail, print_json
from vmshadow.domain.codec import proposal_to_json
from vmshadow.domain.errors import VmshadowError
from vmshadow.domain.net import parse_ports
from vmshadow.domain.proposal import Proposal, ProposalState

app = typer.Typer(help="Review proposals: list, show, approve, reject, edit, stage, apply.", no_args_is_help=True)

Db = Annotated[str, typer.Option("--db", help="SQLite file path or database URL.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Actor = Annotated[str, typer.Option("--actor", help="Who decides (default: the OS user).")]
Bridges = Annotated[list[str] | None, typer.Option("--bridge", help="Managed bridge (repeatable).")]
Netns = Annotated[str | None, typer.Option("--netns", help="Run nft inside this network namespace.")]


def _tm(db: str, bridge: list[str] | None, netns: str | None) -> TMSettings:
    return TMSettings(db_url=db_url(db), bridges=tuple(bridge or [DEFAULT_BRIDGE]), netns=netns)


def _me() -> str:
    return getpass.getuser()


def _one_line(p: Proposal) -> str:
    return p.rule.describe() if p.rule is not None else p.summary


@app.command("list")
def list_(
    state: Annotated[ProposalState | None, typer.Option("--state", help="Only proposals in this state.")] = None,
    db: Db = DEFAULT_DB,
    as_json: Json = False,
) -> None:
    """Proposals, strongest first."""
    try:
        found = sorted(list_proposals(db_url(db), state), key=lambda p: (-p.score, p.created_at))
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json([proposal_to_json(p) for p in found])
        return
    table = Table(title=f"{len(found)} proposal(s)", title_justify="left")
    for col in ("id", "kind", "state", "score", "rule", "newly blocked"):
        table.add_column(col, overflow="fold")
    for p in found:
        table.add_row(
            p.id, str(p.kind), str(p.state), f"{p.score:.2f}", _one_line(p), str(p.impact.newly_blocked_flows)
        )
    console.print(table)


@app.command()
def show(
    proposal_id: str, db: Db = DEFAULT_DB, bridge: Bridges = None, netns: Netns = None, as_json: Json = False
) -> None:
    """One proposal with its evidence, impact, staged hits and every decision taken on it (a staged rule's hits
    are read from the kernel: --bridge/--netns say where)."""
    try:
        reviewed = show_proposal(db_url(db), proposal_id, _tm(db, bridge, netns))
    except VmshadowError as exc:
        fail(exc)
    p = reviewed.proposal
    staged = reviewed.staged_hits
    if as_json:
        data = proposal_to_json(p)
        data["staged_hits"] = None if staged is None else staged.to_json()
        data["decisions"] = [
            {"from": str(d.from_state), "to": str(d.to_state), "actor": d.actor, "at": d.decided_at.isoformat(),
             "reason": d.reason, "before": d.before, "after": d.after}
            for d in reviewed.decisions
        ]  # fmt: skip
        print_json(data)
        return
    console.print(f"[bold]{p.kind}[/] {p.id} — state [bold]{p.state}[/], score {p.score:.2f}, trust {p.trust:.2f}")
    console.print(f"  {p.summary}", highlight=False)
    if p.rule is not None:
        console.print(f"  rule      {p.rule.describe()} (priority {p.rule.priority}, id {p.rule.id})", highlight=False)
    console.print(
        f"  impact    {p.impact.newly_blocked_flows} of {p.impact.flows_replayed} recorded flows newly blocked; "
        f"VMNs {', '.join(p.impact.vmns_affected) or '-'}",
        highlight=False,
    )
    if p.conflicts:
        console.print(f"  conflicts {', '.join(p.conflicts)}", highlight=False)
    if staged is not None:
        how = "counting now" if staged.counting else "counted while staged"
        error = f" ({staged.error})" if staged.error else ""
        console.print(f"  staged hits {staged.packets} packets, {how}{error}", highlight=False)
    console.print(f"  evidence  findings {', '.join(p.evidence.finding_ids)}", highlight=False)
    console.print(
        f"            flows {', '.join(p.evidence.community_ids[:5])}{' …' * (len(p.evidence.community_ids) > 5)}"
    )
    for d in reviewed.decisions:
        console.print(f"  {d.decided_at:%Y-%m-%d %H:%M:%S} {d.actor}: {d.from_state} -> {d.to_state} {d.reason}")


def _decide(
    proposal_id: str, target: ProposalState, db: str, actor: str, reason: str, as_json: bool,
    tm: TMSettings | None = None,
) -> None:  # fmt: skip
    try:
        moved = decide_proposal(db_url(db), proposal_id, target, actor=actor, reason=reason, tm=tm)
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(proposal_to_json(moved))
    else:
        console.print(f"{moved.id}: {moved.state}")


@app.command()
def approve(
    proposal_id: str, reason: Annotated[str, typer.Option("--reason")] = "", db: Db = DEFAULT_DB,
    actor: Actor = "", as_json: Json = False,
) -> None:  # fmt: skip
    """Approve a proposal (it is applied only by `proposals apply`; a staged rule keeps counting until then)."""
    _decide(proposal_id, ProposalState.APPROVED, db, actor or _me(), reason, as_json)


@app.command()
def reject(
    proposal_id: str, reason: Annotated[str, typer.Option("--reason", help="Required.")] = "", db: Db = DEFAULT_DB,
    bridge: Bridges = None, netns: Netns = None, actor: Actor = "", as_json: Json = False,
) -> None:  # fmt: skip
    """Reject a proposal; a reason is required. A staged rule stops counting (a new TMR version without it)."""
    _decide(proposal_id, ProposalState.REJECTED, db, actor or _me(), reason, as_json, _tm(db, bridge, netns))


@app.command()
def stage(
    proposal_id: str, db: Db = DEFAULT_DB, bridge: Bridges = None, netns: Netns = None, actor: Actor = "",
    as_json: Json = False,
) -> None:  # fmt: skip
    """Stage a proposal: its rule counts the packets it would decide, beside the TMRs in force, deciding nothing
    (a new TMR version); `proposals show` gives its staged hits."""
    try:
        moved, result = stage_proposal(_tm(db, bridge, netns), proposal_id, actor=actor or _me())
    except VmshadowError as exc:
        fail(exc)
    line = f"{moved.id}: staged, counting in TMR version {result.version} (no packet is decided by it)"
    _print_moved(moved, result, as_json, line)


@app.command()
def edit(
    proposal_id: str,
    priority: Annotated[int | None, typer.Option("--priority")] = None,
    ports: Annotated[str | None, typer.Option("--ports", help="e.g. 22,8000-8080; 'any' for every port")] = None,
    expires_in: Annotated[float | None, typer.Option("--expires-in", help="Seconds from now.")] = None,
    comment: Annotated[str | None, typer.Option("--comment")] = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    db: Db = DEFAULT_DB,
    bridge: Bridges = None,
    netns: Netns = None,
    actor: Actor = "",
    as_json: Json = False,
) -> None:
    """Edit a proposal's rule (priority, ports, expiry, comment); the before/after is audited. A staged rule stops
    counting (stage the edited one again)."""
    try:
        moved = edit_proposal(
            db_url(db),
            proposal_id,
            actor=actor or _me(),
            reason=reason,
            priority=priority,
            ports=None if ports is None else parse_ports([] if ports.strip() == "any" else ports.split(","), "--ports"),
            expires_at=None if expires_in is None else datetime.now(UTC) + timedelta(seconds=expires_in),
            comment=comment,
            tm=_tm(db, bridge, netns),
        )
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(proposal_to_json(moved))
    else:
        assert moved.rule is not None
        console.print(f"{moved.id}: edited, rule now {moved.rule.describe()} (priority {moved.rule.priority})")


def _print_moved(moved: Proposal, result: ApplyResult, as_json: bool, line: str) -> None:
    """What a move through the TM (stage, apply, rollback) did: the proposal and the version, or one line."""
    if as_json:
        print_json({"proposal": proposal_to_json(moved), "applied": result.to_json()})
    else:
        console.print(line)


@app.command("apply")
def apply_(
    proposal_id: str,
    db: Db = DEFAULT_DB,
    bridge: Bridges = None,
    netns: Netns = None,
    actor: Actor = "",
    as_json: Json = False,
) -> None:
    """Apply an approved proposal: the TMRs in force plus its rule, as one new version (atomic, reversible)."""
    try:
        moved, result = apply_proposal(_tm(db, bridge, netns), proposal_id, actor=actor or _me())
    except VmshadowError as exc:
        fail(exc)
    line = f"{moved.id}: applied as TMR version {result.version} (rollback: vmshadow tmrs rollback N)"
    _print_moved(moved, result, as_json, line)


@app.command("rollback")
def rollback(
    proposal_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Required.")] = "",
    db: Db = DEFAULT_DB,
    bridge: Bridges = None,
    netns: Netns = None,
    actor: Actor = "",
    as_json: Json = False,
) -> None:
    """Take an applied proposal's rule out of force (a new version without it); its recommender's trust falls."""
    try:
        moved, result = rollback_proposal(_tm(db, bridge, netns), proposal_id, actor=actor or _me(), reason=reason)
    except VmshadowError as exc:
        fail(exc)
    _print_moved(
        moved, result, as_json, f"{moved.id}: rolled back; TMR version {result.version} is in force without its rule"
    )
