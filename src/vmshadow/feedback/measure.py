"""Measure applied proposals into outcomes: rule counters, findings after the apply, the review log, reports.

Every function is pure and gives each outcome an id derived from what it is about, so measuring the same thing
twice records it once (`Store.record_outcome` is idempotent by id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from vmshadow.domain.decision import Decision
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.finding import Finding
from vmshadow.domain.ids import stable_id
from vmshadow.domain.outcome import DEFAULT_WEIGHTS, Outcome, OutcomeKind
from vmshadow.domain.proposal import Proposal, ProposalState

MEASURED_BY = "vmshadow"
DEFAULT_QUIET = timedelta(hours=1)
"""How long an offender must stay silent after the apply before its finding counts as stopped."""

_EVER_APPLIED = frozenset({ProposalState.APPLIED, ProposalState.EXPIRED, ProposalState.ROLLED_BACK})
_LIFECYCLE = {ProposalState.ROLLED_BACK: OutcomeKind.ROLLED_BACK, ProposalState.EXPIRED: OutcomeKind.EXPIRED}


def _outcome(
    p: Proposal, kind: OutcomeKind, at: datetime, key: object, *, value: float = 0.0, actor: str = MEASURED_BY,
    detail: str = "",
) -> Outcome:  # fmt: skip
    return Outcome(
        id=stable_id("out", p.id, kind, key), proposal_id=p.id, recommender=p.recommender, kind=kind,
        observed_at=at, value=value, weight=DEFAULT_WEIGHTS[kind], actor=actor, detail=detail,
    )  # fmt: skip


def outcomes_from_counters(
    applied: Iterable[Proposal], before: Mapping[str, int], after: Mapping[str, int], at: datetime
) -> list[Outcome]:
    """A `hits` outcome for each applied proposal whose rule matched packets between two counter readings.

    `before`/`after` are packets per TMR id (`Enforcer.counters()`); a rule missing from `after` is not in force.
    nftables resets counters when a ruleset is replaced, so a reading lower than before counts from zero.
    """
    found = []
    for p in applied:
        if p.state is not ProposalState.APPLIED or p.rule is None or p.rule.id not in after:
            continue
        now, then = after[p.rule.id], before.get(p.rule.id, 0)
        packets = now - then if now >= then else now
        if packets > 0:
            found.append(_outcome(p, OutcomeKind.HITS, at, at.isoformat(), value=packets, detail=f"TMR {p.rule.id}"))
    return found


def outcomes_from_findings(
    proposal: Proposal,
    findings: Sequence[Finding],
    *,
    applied_at: datetime,
    at: datetime,
    quiet: timedelta = DEFAULT_QUIET,
) -> list[Outcome]:
    """Did the offender behind an applied proposal stop? `findings` must include the proposal's evidence.

    A later finding of the same kind from the same source (address or VMN) means `finding_continued`, with the
    number of such findings as its value; none for `quiet` after the apply means `finding_stopped`. Too early to
    tell, or evidence not among `findings`: no outcome.
    """
    evidence_ids = set(proposal.evidence.finding_ids)
    evidence = [f for f in findings if f.id in evidence_ids]
    if proposal.rule is None or not evidence:
        return []
    offenders = {(f.kind, str(f.src_ip)) for f in evidence} | {
        (f.kind, f"vmn:{f.src_vmn}") for f in evidence if f.src_vmn
    }
    continued = [
        f
        for f in findings
        if f.id not in evidence_ids
        and applied_at < f.observed_at <= at
        and ((f.kind, str(f.src_ip)) in offenders or (f.src_vmn and (f.kind, f"vmn:{f.src_vmn}") in offenders))
    ]
    if continued:
        return [
            _outcome(
                proposal, OutcomeKind.FINDING_CONTINUED, at, at.isoformat(), value=len(continued),
                detail=", ".join(sorted(f.id for f in continued)[:5]),
            )
        ]  # fmt: skip
    if at - applied_at >= quiet:
        return [_outcome(proposal, OutcomeKind.FINDING_STOPPED, at, applied_at.isoformat())]
    return []


def outcomes_from_decisions(proposals: Mapping[str, Proposal], decisions: Iterable[Decision]) -> list[Outcome]:
    """A `rolled_back` or `expired` outcome for each such decision in the review log (one per decision)."""
    found = []
    for d in decisions:
        kind = _LIFECYCLE.get(d.to_state)
        p = proposals.get(d.proposal_id)
        if kind is not None and p is not None:
            found.append(_outcome(p, kind, d.decided_at, d.id, actor=d.actor, detail=d.reason))
    return found


def was_applied(proposal: Proposal, decisions: Iterable[Decision] = ()) -> bool:
    """Whether the proposal was ever in force: its state says so, or a decision on record moved it to applied."""
    return proposal.state in _EVER_APPLIED or any(
        d.proposal_id == proposal.id and d.to_state is ProposalState.APPLIED for d in decisions
    )


def false_positive(
    proposal: Proposal, decisions: Iterable[Decision], *, actor: str, reason: str, at: datetime
) -> Outcome:
    """An administrator's false-positive report on a proposal that was applied; one per proposal and actor.

    `InputError` when the proposal was never applied (there is nothing to judge) or no reason is given.
    """
    source = f"proposal {proposal.id}"
    if not was_applied(proposal, decisions):
        raise InputError(
            Issue(
                source=source, field="state", message=f"was never applied (it is {proposal.state}): nothing to report"
            )
        )
    if not reason.strip():
        raise InputError(Issue(source=source, field="reason", message="a false-positive report needs a reason"))
    return _outcome(proposal, OutcomeKind.FALSE_POSITIVE, at, actor, actor=actor, detail=reason.strip())
