"""`decide` audits every move and refuses what the table or the rules of review refuse."""

from __future__ import annotations

import pytest

from tests.factories import T0, make_proposal, make_rule
from vmshadow.domain.errors import IllegalTransitionError, InputError
from vmshadow.domain.proposal import ProposalState
from vmshadow.review.lifecycle import decide


def test_approve_records_who_when_and_the_rule() -> None:
    proposal = make_proposal()
    moved, decision = decide(proposal, ProposalState.APPROVED, actor="alice", at=T0)
    assert moved.state is ProposalState.APPROVED
    assert (decision.from_state, decision.to_state, decision.actor) == (
        ProposalState.PROPOSED,
        ProposalState.APPROVED,
        "alice",
    )
    assert decision.before == decision.after is not None


def test_edit_keeps_before_and_after() -> None:
    edited = make_rule(9, comment="narrowed")
    moved, decision = decide(make_proposal(), ProposalState.EDITED, actor="bob", at=T0, edited_rule=edited)
    assert moved.rule == edited
    assert decision.before is not None
    assert decision.after is not None
    assert decision.before["id"] == "tmr-0"
    assert decision.after["comment"] == "narrowed"


def test_reject_needs_a_reason_and_edit_needs_a_rule() -> None:
    with pytest.raises(InputError, match="reason: a rejection needs a reason"):
        decide(make_proposal(), ProposalState.REJECTED, actor="a", at=T0, reason="  ")
    with pytest.raises(InputError, match="an edit needs the edited rule"):
        decide(make_proposal(), ProposalState.EDITED, actor="a", at=T0)


def test_approving_a_rejected_proposal_is_refused() -> None:
    with pytest.raises(IllegalTransitionError, match="cannot go from rejected to approved"):
        decide(make_proposal(state=ProposalState.REJECTED), ProposalState.APPROVED, actor="a", at=T0)
