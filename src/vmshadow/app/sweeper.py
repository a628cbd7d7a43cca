"""The sweeper duty: applied proposals whose rule expired are moved to `expired` in the review log.

    sweep_expired("sqlite:///var/vmshadow.db")   # the proposals it moved, each with an `expired` outcome

The kernel already stopped enforcing them (set-element timeouts); this keeps the audit log and the feedback in step,
including for rules that ran out while vmshadow was down (the first sweep after a start catches them up).
"""

from __future__ import annotations

from datetime import UTC, datetime

from vmshadow.app.stores import opened
from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.feedback.expiry import expiries
from vmshadow.feedback.measure import outcomes_from_decisions


def sweep_expired(db_url: str, at: datetime | None = None) -> list[Proposal]:
    """Move every applied proposal whose rule expired by `at` (default now) to `expired`, with its audited decision
    and the `expired` outcome for its recommender. Sweeping again finds nothing more to move."""
    now = at or datetime.now(UTC)
    moved = []
    with opened(db_url) as store:
        for proposal, decision in expiries(store.proposals(state=ProposalState.APPLIED), now):
            store.record_decision(decision, proposal)
            for outcome in outcomes_from_decisions({proposal.id: proposal}, [decision]):
                store.record_outcome(outcome)
            moved.append(proposal)
    return moved
