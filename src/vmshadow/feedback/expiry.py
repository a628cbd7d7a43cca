"""The sweeper's judgement: which applied proposals have run out.

The kernel removes a temporary TMR's set elements at their timeout, even while vmshadow is down
(docs/enforcement.md). What the kernel cannot do is tell the review log: an applied proposal whose rule expired
would stay `applied` for ever, and its recommender would never get the (neutral) `expired` outcome. The sweeper
moves each such proposal to `expired`, one audited decision each, when the service next runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from vmshadow.domain.decision import Decision
from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.review.lifecycle import decide

SWEEPER = "vmshadow (sweeper)"


def ran_out(proposal: Proposal, at: datetime) -> bool:
    """An applied proposal whose rule has an expiry at or before `at`."""
    rule = proposal.rule
    return (
        proposal.state is ProposalState.APPLIED
        and rule is not None
        and rule.expires_at is not None
        and rule.expires_at <= at
    )


def expiries(proposals: Iterable[Proposal], at: datetime) -> list[tuple[Proposal, Decision]]:
    """For each applied proposal that ran out by `at`: the proposal moved to `expired` and the decision saying so
    (dated at the rule's expiry, when it really stopped deciding, not when the sweeper noticed)."""
    out = []
    for p in proposals:
        expired_at = p.rule.expires_at if p.rule is not None else None
        if expired_at is not None and ran_out(p, at):
            out.append(
                decide(p, ProposalState.EXPIRED, actor=SWEEPER, at=expired_at,
                       reason=f"the rule expired at {expired_at.isoformat()}")
            )  # fmt: skip
    return out
