"""The proposal transition table: every edge allowed by it works, every other one is refused."""

from __future__ import annotations

import pytest

from tests.factories import make_alert, make_proposal
from vmshadow.domain.errors import IllegalTransitionError
from vmshadow.domain.proposal import TRANSITIONS, ProposalKind, ProposalState, can_transition, transition

ALL_EDGES = [(a, b) for a in ProposalState for b in ProposalState]


@pytest.mark.parametrize(("start", "target"), ALL_EDGES)
def test_transition_follows_the_table(start: ProposalState, target: ProposalState) -> None:
    proposal = make_proposal(state=start)
    if target in TRANSITIONS[start]:
        assert transition(proposal, target).state is target
    else:
        with pytest.raises(IllegalTransitionError, match=f"cannot go from {start} to {target}"):
            transition(proposal, target)


def test_named_illegal_moves() -> None:
    assert not can_transition(ProposalState.REJECTED, ProposalState.APPROVED)
    assert not can_transition(ProposalState.PROPOSED, ProposalState.APPLIED)
    assert not can_transition(ProposalState.STAGED, ProposalState.APPLIED)


def test_final_states_have_no_way_out() -> None:
    for final in (ProposalState.REJECTED, ProposalState.EXPIRED, ProposalState.ROLLED_BACK):
        assert TRANSITIONS[final] == frozenset()


def test_every_state_is_reachable_from_proposed() -> None:
    seen, todo = {ProposalState.PROPOSED}, [ProposalState.PROPOSED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(ProposalState)


def test_an_alert_cannot_be_applied() -> None:
    alert = make_alert(state=ProposalState.APPROVED)
    with pytest.raises(IllegalTransitionError, match="an alert has no rule to apply"):
        transition(alert, ProposalState.APPLIED)


def test_alert_and_rule_are_exclusive() -> None:
    with pytest.raises(ValueError, match="an alert has no rule"):
        make_proposal(kind=ProposalKind.ALERT)
    with pytest.raises(ValueError, match="every other kind has one"):
        make_proposal(rule=None)
