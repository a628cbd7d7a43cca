"""The review gate's composition root: proposals read from and decided in the store, approved ones applied by the TM.

Every decision is stored with the proposal's new state in one transaction (append-only audit). Only a proposal in
state `approved` reaches the enforcer, and it is marked `applied` only after the kernel confirmed the new version.

A **staged** proposal's rule is in the kernel too, counting only (`StagedRule`): `stage_proposal` applies the
TMRSet in force again with the rule staged beside it, and records `staged` once the kernel holds it. The rule
counts from then until its proposal is applied (the apply that puts it in force takes the counting rule out in the
same transaction) or rejected or edited (the TM takes it out first); approving it keeps it counting. Its count
(`staged hits`) is kept in the proposal's `evidence.measured["staged_hits"]` when it stops counting, and is read
live from the kernel while it counts (`show_proposal`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from vmshadow.app.feedback import record_tmrs_rollback
from vmshadow.app.stores import opened
from vmshadow.app.tm import ApplyResult, TMSettings, open_enforcer
from vmshadow.domain.decision import Decision
from vmshadow.domain.errors import IllegalTransitionError, InputError, Issue, NotFoundError, VmshadowError
from vmshadow.domain.net import PortRange
from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState, can_transition
from vmshadow.domain.tmr import TMR, TMRSet
from vmshadow.enforcement.nft import NftEnforcer
from vmshadow.feedback.measure import outcomes_from_decisions
from vmshadow.ports.enforcer import StagedRule
from vmshadow.ports.store import Store
from vmshadow.refinement.scoped_deny import DURATION_KEY
from vmshadow.review.lifecycle import decide

STAGED_HITS = "staged_hits"
"""The key of `Evidence.measured` that keeps what a staged rule counted once it stopped counting."""


@dataclass(frozen=True, slots=True)
class StagedHits:
    """What a proposal's staged rule counted: packets it would have decided (see `StagedRule`).

    `counting`: the rule counts in the kernel now (`packets` is a live reading); otherwise `packets` is what it
    counted while it was staged. `error` says why a proposal that should be counting could not be read."""

    packets: int
    counting: bool
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"packets": self.packets, "counting": self.counting, "error": self.error}


@dataclass(frozen=True, slots=True)
class Reviewed:
    proposal: Proposal
    decisions: tuple[Decision, ...]
    staged_hits: StagedHits | None = None  # None: never staged


def _get(store: Store, proposal_id: str) -> Proposal:
    found = store.proposal(proposal_id)
    if found is None:
        raise NotFoundError(Issue(source="proposals", field="id", message=f"no proposal {proposal_id!r}"))
    return found


def list_proposals(db_url: str, state: ProposalState | None = None) -> list[Proposal]:
    with opened(db_url) as store:
        return store.proposals(state=state)


def show_proposal(db_url: str, proposal_id: str, tm: TMSettings | None = None) -> Reviewed:
    """The proposal, its decisions and its staged hits: read live from the kernel (through `tm`) while its rule
    counts, else as recorded when it stopped counting."""
    with opened(db_url) as store:
        proposal = _get(store, proposal_id)
        decisions = tuple(store.decisions(proposal_id))
        counting = counting_in_kernel(proposal, decisions)
    recorded = proposal.evidence.measured.get(STAGED_HITS)
    kept = int(recorded) if isinstance(recorded, int | float) else None
    if not counting:
        return Reviewed(proposal, decisions, None if kept is None else StagedHits(kept, counting=False))
    if tm is None:
        return Reviewed(proposal, decisions, StagedHits(kept or 0, counting=True, error="the kernel was not asked"))
    try:
        with open_enforcer(tm) as enforcer:
            live = enforcer.staged_counters()
    except VmshadowError as error:
        return Reviewed(proposal, decisions, StagedHits(kept or 0, counting=True, error=str(error)))
    if proposal_id not in live:
        said = "staged, but its counting rule is not in the kernel (was the vmshadow table removed?)"
        return Reviewed(proposal, decisions, StagedHits(kept or 0, counting=False, error=said))
    return Reviewed(proposal, decisions, StagedHits(live[proposal_id], counting=True))


def counting_in_kernel(proposal: Proposal, decisions: tuple[Decision, ...] | list[Decision]) -> bool:
    """Whether the proposal's rule should be counting in the kernel: it is staged, or was approved while staged
    (it counts until it is applied or rejected)."""
    if proposal.state is ProposalState.STAGED:
        return True
    mine = [d for d in decisions if d.proposal_id == proposal.id]
    return proposal.state is ProposalState.APPROVED and bool(mine) and mine[-1].from_state is ProposalState.STAGED


def _with_staged_hits(proposal: Proposal, packets: int) -> Proposal:
    measured = {**proposal.evidence.measured, STAGED_HITS: packets}
    return replace(proposal, evidence=replace(proposal.evidence, measured=measured))


def decide_proposal(
    db_url: str,
    proposal_id: str,
    target: ProposalState,
    *,
    actor: str,
    reason: str = "",
    edited_rule: TMR | None = None,
    at: datetime | None = None,
    tm: TMSettings | None = None,
) -> Proposal:
    """Move a proposal (not to `applied`: that is `apply_proposal`'s job) and store the audited decision.

    Staging, and rejecting or editing a proposal whose rule counts in the kernel, go through the TM (`tm`, over the
    same database): without it they are refused and nothing changes."""
    source = f"proposal {proposal_id}"
    if target is ProposalState.APPLIED:
        raise InputError(Issue(source=source, field="state", message="use apply to apply"))
    now = at or datetime.now(UTC)
    with opened(db_url) as store:
        proposal = _get(store, proposal_id)
        moved, decision = decide(proposal, target, actor=actor, at=now, reason=reason, edited_rule=edited_rule)
        kernel = target is ProposalState.STAGED or (
            target in (ProposalState.REJECTED, ProposalState.EDITED)
            and counting_in_kernel(proposal, store.decisions(proposal_id))
        )
        if not kernel:
            store.record_decision(decision, moved)
            return moved
    if tm is None:
        said = "a staged rule counts in the kernel: staging or unstaging goes through the TM (name the bridge)"
        raise InputError(Issue(source=source, field="state", message=said))
    if target is ProposalState.STAGED:
        return stage_proposal(tm, proposal_id, actor=actor, at=now)[0]
    return _unstage(tm, proposal_id, target, actor=actor, reason=reason, edited_rule=edited_rule, at=now)


def stage_proposal(
    settings: TMSettings, proposal_id: str, *, actor: str, at: datetime | None = None
) -> tuple[Proposal, ApplyResult]:
    """Put a proposal's rule in the kernel counting only, beside the TMRSet in force (one new version), then record
    it `staged`. Refused (nothing changes) where the lifecycle forbids it, for an alert, and when the rule could not
    be applied to the TMRSet in force (unknown VMN, an id already in force)."""
    now = at or datetime.now(UTC)
    with open_enforcer(settings) as enforcer:
        proposal, rule, in_force, staged = _movable(enforcer, proposal_id, ProposalState.STAGED, actor, now)
        _applied_set(proposal, rule, in_force)  # the same checks as an apply: it must be appliable as it is
        kept = [s for s in staged if s.proposal_id != proposal_id]
        applied = enforcer.apply(
            in_force,
            now,
            [*kept, StagedRule(proposal_id, _timed_from_apply(proposal, rule, now))],  # counts as if applied now
            comment=f"stage proposal {proposal_id} by {actor}",
        )
        assert enforcer.last_report is not None
        moved, decision = decide(
            proposal, ProposalState.STAGED, actor=actor, at=now, reason=f"counting in version {applied.version}"
        )
        enforcer.store.record_decision(decision, moved)
        return moved, ApplyResult(applied.version, applied.applied_at, enforcer.last_report)


def _unstage(
    settings: TMSettings,
    proposal_id: str,
    target: ProposalState,
    *,
    actor: str,
    reason: str,
    edited_rule: TMR | None,
    at: datetime,
) -> Proposal:
    """Reject or edit a proposal whose rule counts: the TM takes the counting rule out (a new version), then the
    decision is recorded with what the rule counted."""
    with open_enforcer(settings) as enforcer:
        proposal = _get(enforcer.store, proposal_id)
        decide(proposal, target, actor=actor, at=at, reason=reason, edited_rule=edited_rule)  # refusals first
        current = enforcer.current()
        staged = current.staged if current is not None else ()
        said = reason
        packets: int | None = None
        if any(s.proposal_id == proposal_id for s in staged):
            assert current is not None
            packets = enforcer.staged_counters().get(proposal_id, 0)
            rest = [s for s in staged if s.proposal_id != proposal_id]
            applied = enforcer.apply(
                current.tmrset, at, rest, comment=f"unstage proposal {proposal_id} ({target}) by {actor}"
            )
            note = f"unstaged in version {applied.version}; {packets} staged hits"
            said = f"{reason} ({note})" if reason.strip() else note
        moved, decision = decide(proposal, target, actor=actor, at=at, reason=said, edited_rule=edited_rule)
        if packets is not None:
            moved = _with_staged_hits(moved, packets)
        enforcer.store.record_decision(decision, moved)
        return moved


def edit_proposal(
    db_url: str,
    proposal_id: str,
    *,
    actor: str,
    reason: str = "",
    priority: int | None = None,
    ports: tuple[PortRange, ...] | None = None,
    expires_at: datetime | None = None,
    comment: str | None = None,
    at: datetime | None = None,
    tm: TMSettings | None = None,
) -> Proposal:
    """Change the fields given of a proposal's rule; the decision keeps the rule before and after. Editing a staged
    proposal takes its counting rule out (through `tm`): the edited rule counts only when staged again."""
    source = f"proposal {proposal_id}"
    with opened(db_url) as store:
        rule = _get(store, proposal_id).rule
    if rule is None:
        raise InputError(Issue(source=source, field="rule", message="an alert has no rule"))
    changes = {
        k: v
        for k, v in (("priority", priority), ("ports", ports), ("expires_at", expires_at), ("comment", comment))
        if v is not None
    }
    if not changes:
        raise InputError(Issue(source=source, message="nothing to change"))
    try:
        edited = replace(rule, **changes)  # type: ignore[arg-type]
    except ValueError as exc:  # the TMR's own checks (ports need tcp/udp, a timezone on expires_at)
        raise InputError(Issue(source=source, field="rule", message=str(exc))) from None
    return decide_proposal(
        db_url, proposal_id, ProposalState.EDITED, actor=actor, reason=reason, edited_rule=edited, at=at, tm=tm
    )


def _movable(
    enforcer: NftEnforcer, proposal_id: str, target: ProposalState, actor: str, now: datetime
) -> tuple[Proposal, TMR, TMRSet, tuple[StagedRule, ...]]:
    """The proposal, its rule, the TMRSet in force and the staged rules beside it, when the proposal may move to
    `target` (staged, applied, rolled back) through the TM; else the lifecycle's own precise refusal."""
    proposal = _get(enforcer.store, proposal_id)
    if not can_transition(proposal.state, target) or proposal.rule is None:
        decide(proposal, target, actor=actor, at=now)  # raises the precise refusal
        said = f"cannot be {str(target).replace('_', ' ')}"  # an alert has no rule to stage, apply or take back
        raise IllegalTransitionError(Issue(source=f"proposal {proposal_id}", message=said))
    current = enforcer.current()
    if current is None:
        return proposal, proposal.rule, TMRSet(), ()
    return proposal, proposal.rule, current.tmrset, current.staged


def _applied_set(proposal: Proposal, rule: TMR, in_force: TMRSet) -> TMRSet:
    """The TMRSet in force with the proposal's rule applied (a reprioritize moves the TMR in force), or
    `InputError` when it cannot be."""
    present = any(t.id == rule.id for t in in_force.tmrs)
    moves = proposal.kind is ProposalKind.REPRIORITIZE  # the TMR in force, at a new priority
    if present is not moves:
        said = f"TMR {rule.id} is not in force (nothing to move)" if moves else f"TMR {rule.id} is in force"
        raise InputError(Issue(source=f"proposal {proposal.id}", field="rule", message=said))
    try:
        return (in_force.without(rule.id) if moves else in_force).with_tmr(rule)
    except ValueError as exc:  # e.g. the rule names a VMN the set in force does not know
        raise InputError(Issue(source=f"proposal {proposal.id}", field="rule", message=str(exc))) from None


def _timed_from_apply(proposal: Proposal, rule: TMR, now: datetime) -> TMR:
    """A temporary deny lasts its duration from the apply, not from the proposal (an approval can take hours, and
    a deny that expired before it was applied would stop nothing). An expiry an administrator edited stands."""
    seconds = proposal.evidence.measured.get(DURATION_KEY)
    if not isinstance(seconds, int) or rule.expires_at is None:
        return rule
    as_proposed = proposal.created_at + timedelta(seconds=seconds)
    if rule.expires_at != as_proposed:
        return rule  # edited
    return replace(rule, expires_at=now + timedelta(seconds=seconds))


def apply_proposal(
    settings: TMSettings, proposal_id: str, *, actor: str, at: datetime | None = None
) -> tuple[Proposal, ApplyResult]:
    """Put an approved proposal's rule in force: the TMRSet in force plus the rule, as one new version. A rule that
    was counting (staged, then approved) stops counting in the same transaction; its count is recorded with the
    proposal (`evidence.measured["staged_hits"]`) and in the decision's reason."""
    now = at or datetime.now(UTC)
    with open_enforcer(settings) as enforcer:
        proposal, rule, in_force, staged = _movable(enforcer, proposal_id, ProposalState.APPLIED, actor, now)
        rule = _timed_from_apply(proposal, rule, now)
        target = _applied_set(proposal, rule, in_force)
        counting = any(s.proposal_id == proposal_id for s in staged)
        packets = enforcer.staged_counters().get(proposal_id, 0) if counting else None
        rest = [s for s in staged if s.proposal_id != proposal_id]
        applied = enforcer.apply(target, now, rest, comment=f"proposal {proposal_id} by {actor}")
        assert enforcer.last_report is not None
        said = f"version {applied.version}" + ("" if packets is None else f"; {packets} staged hits")
        if rule.expires_at is not None:
            said += f"; expires {rule.expires_at.isoformat(timespec='seconds')}"
        moved, decision = decide(
            proposal, ProposalState.APPLIED, actor=actor, at=now, reason=said,
            edited_rule=rule if rule != proposal.rule else None,
        )  # fmt: skip
        if packets is not None:
            moved = _with_staged_hits(moved, packets)
        enforcer.store.record_decision(decision, moved)
        return moved, ApplyResult(applied.version, applied.applied_at, enforcer.last_report)


def rollback_proposal(
    settings: TMSettings, proposal_id: str, *, actor: str, reason: str, at: datetime | None = None
) -> tuple[Proposal, ApplyResult]:
    """Take an applied proposal's rule out of force: the TMRSet in force without it, as one new version; the
    proposal becomes `rolled_back` and its recommender gets a rolled-back outcome (trust falls) at once.

    A reason is required (it is the audit trail of a mistake). If the kernel refuses the new version, nothing is
    recorded and the rule stays in force."""
    now = at or datetime.now(UTC)
    source = f"proposal {proposal_id}"
    if not reason.strip():
        raise InputError(Issue(source=source, field="reason", message="a rollback needs a reason"))
    with open_enforcer(settings) as enforcer:
        proposal, rule, in_force, _ = _movable(enforcer, proposal_id, ProposalState.ROLLED_BACK, actor, now)
        target = in_force.without(rule.id)  # already gone (an earlier version rollback): still recorded
        applied = enforcer.apply(target, now, comment=f"rollback of proposal {proposal_id} by {actor}")
        assert enforcer.last_report is not None
        moved, decision = decide(
            proposal, ProposalState.ROLLED_BACK, actor=actor, at=now, reason=f"{reason} (version {applied.version})"
        )
        enforcer.store.record_decision(decision, moved)
        for outcome in outcomes_from_decisions({moved.id: moved}, [decision]):
            enforcer.store.record_outcome(outcome)
        return moved, ApplyResult(applied.version, applied.applied_at, enforcer.last_report)


def rollback_version(
    settings: TMSettings, version: int, *, actor: str, at: datetime | None = None
) -> tuple[ApplyResult, list[Proposal]]:
    """Put an earlier TMR version back in force (as a new version) and take back, in the review log, every applied
    proposal whose rule that removed: each becomes `rolled_back` with a rolled-back outcome for its recommender."""
    now = at or datetime.now(UTC)
    with open_enforcer(settings) as enforcer:
        current = enforcer.current()
        before = current.tmrset if current is not None else TMRSet()
        applied = enforcer.rollback(version, now)
        assert enforcer.last_report is not None
        moved = record_tmrs_rollback(
            enforcer.store, before, applied.tmrset, actor=actor, version=applied.version, at=now
        )
        return ApplyResult(applied.version, applied.applied_at, enforcer.last_report), moved
