"""The review gate's composition root: proposals read from and decided in the store, approved ones applied by the TM.

Every decision is stored with the proposal's new state in one transaction (append-only audit). Only a proposal in
state `approved` reaches the enforcer, and it is marked `applied` only after the kernel confirmed the new version.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from vmshadow.app.feedback import record_tmrs_rollback
from vmshadow.app.stores import opened
from vmshadow.app.tm import ApplyResult, TMSettings, open_enforcer
from vmshadow.domain.decision import Decision
from vmshadow.domain.errors import IllegalTransitionError, InputError, Issue, NotFoundError
from vmshadow.domain.net import PortRange
from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState, can_transition
from vmshadow.domain.tmr import TMR, TMRSet
from vmshadow.enforcement.nft import NftEnforcer
from vmshadow.feedback.measure import outcomes_from_decisions
from vmshadow.ports.store import Store
from vmshadow.review.lifecycle import decide


@dataclass(frozen=True, slots=True)
class Reviewed:
    proposal: Proposal
    decisions: tuple[Decision, ...]


def _get(store: Store, proposal_id: str) -> Proposal:
    found = store.proposal(proposal_id)
    if found is None:
        raise NotFoundError(Issue(source="proposals", field="id", message=f"no proposal {proposal_id!r}"))
    return found


def list_proposals(db_url: str, state: ProposalState | None = None) -> list[Proposal]:
    with opened(db_url) as store:
        return store.proposals(state=state)


def show_proposal(db_url: str, proposal_id: str) -> Reviewed:
    with opened(db_url) as store:
        return Reviewed(_get(store, proposal_id), tuple(store.decisions(proposal_id)))


def decide_proposal(
    db_url: str,
    proposal_id: str,
    target: ProposalState,
    *,
    actor: str,
    reason: str = "",
    edited_rule: TMR | None = None,
    at: datetime | None = None,
) -> Proposal:
    """Move a proposal (not to `applied`: that is `apply_proposal`'s job) and store the audited decision."""
    if target is ProposalState.APPLIED:
        raise InputError(Issue(source=f"proposal {proposal_id}", field="state", message="use apply to apply"))
    with opened(db_url) as store:
        moved, decision = decide(
            _get(store, proposal_id), target, actor=actor, at=at or datetime.now(UTC), reason=reason,
            edited_rule=edited_rule,
        )  # fmt: skip
        store.record_decision(decision, moved)
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
) -> Proposal:
    """Change the fields given of a proposal's rule; the decision keeps the rule before and after."""
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
        db_url, proposal_id, ProposalState.EDITED, actor=actor, reason=reason, edited_rule=edited, at=at
    )


def _movable(
    enforcer: NftEnforcer, proposal_id: str, target: ProposalState, actor: str, now: datetime
) -> tuple[Proposal, TMR, TMRSet]:
    """The proposal, its rule and the TMRSet in force, when the proposal may move to `target` (applied, rolled
    back) through the TM; else the lifecycle's own precise refusal."""
    proposal = _get(enforcer.store, proposal_id)
    if not can_transition(proposal.state, target) or proposal.rule is None:
        decide(proposal, target, actor=actor, at=now)  # raises the precise refusal
        said = f"cannot be {str(target).replace('_', ' ')}"  # an alert has no rule to apply or take back
        raise IllegalTransitionError(Issue(source=f"proposal {proposal_id}", message=said))
    current = enforcer.current()
    return proposal, proposal.rule, current.tmrset if current is not None else TMRSet()


def apply_proposal(
    settings: TMSettings, proposal_id: str, *, actor: str, at: datetime | None = None
) -> tuple[Proposal, ApplyResult]:
    """Put an approved proposal's rule in force: the TMRSet in force plus the rule, as one new version."""
    now = at or datetime.now(UTC)
    with open_enforcer(settings) as enforcer:
        proposal, rule, in_force = _movable(enforcer, proposal_id, ProposalState.APPLIED, actor, now)
        present = any(t.id == rule.id for t in in_force.tmrs)
        moves = proposal.kind is ProposalKind.REPRIORITIZE  # the TMR in force, at a new priority
        if present is not moves:
            said = f"TMR {rule.id} is not in force (nothing to move)" if moves else f"TMR {rule.id} is in force"
            raise InputError(Issue(source=f"proposal {proposal_id}", field="rule", message=said))
        try:
            target = (in_force.without(rule.id) if moves else in_force).with_tmr(rule)
        except ValueError as exc:  # e.g. the rule names a VMN the set in force does not know
            raise InputError(Issue(source=f"proposal {proposal_id}", field="rule", message=str(exc))) from None
        applied = enforcer.apply(target, now, comment=f"proposal {proposal_id} by {actor}")
        assert enforcer.last_report is not None
        moved, decision = decide(
            proposal, ProposalState.APPLIED, actor=actor, at=now, reason=f"version {applied.version}"
        )
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
        proposal, rule, in_force = _movable(enforcer, proposal_id, ProposalState.ROLLED_BACK, actor, now)
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
