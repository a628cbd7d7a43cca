"""`decide`: move a proposal along one edge of the transition table and write the audit record for it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from vmshadow.domain.codec import tmr_to_json
from vmshadow.domain.decision import Decision
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.ids import stable_id
from vmshadow.domain.proposal import Proposal, ProposalState, transition
from vmshadow.domain.tmr import TMR


def decide(
    proposal: Proposal,
    target: ProposalState,
    *,
    actor: str,
    at: datetime,
    reason: str = "",
    edited_rule: TMR | None = None,
) -> tuple[Proposal, Decision]:
    """The proposal after the decision, and the decision (who, when, why, rule before/after) to append.

    A rejection needs a reason; an edit needs the edited rule. Illegal edges raise `IllegalTransitionError`.
    """
    source = f"proposal {proposal.id}"
    if target is ProposalState.REJECTED and not reason.strip():
        raise InputError(Issue(source=source, field="reason", message="a rejection needs a reason"))
    if target is ProposalState.EDITED and edited_rule is None:
        raise InputError(Issue(source=source, field="rule", message="an edit needs the edited rule"))
    moved = transition(proposal, target)
    if edited_rule is not None:
        moved = replace(moved, rule=edited_rule)
    decision = Decision(
        id=stable_id("dec", proposal.id, proposal.state, target, actor, at.isoformat()),
        proposal_id=proposal.id,
        from_state=proposal.state,
        to_state=target,
        actor=actor,
        decided_at=at,
        reason=reason,
        before=tmr_to_json(proposal.rule) if proposal.rule is not None else None,
        after=tmr_to_json(moved.rule) if moved.rule is not None else None,
    )
    return moved, decision
