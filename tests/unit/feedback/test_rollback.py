"""A TMRSet rollback takes back the proposals applied after the version put back: rolled_back, and trust falls."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.factories import at, make_proposal, make_rule
from vmshadow.adapters.sql import open_store
from vmshadow.app.feedback import record_tmrs_rollback
from vmshadow.domain.outcome import OutcomeKind
from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.feedback.rollback import undone_by_rollback
from vmshadow.feedback.trust import trust_from_outcomes
from vmshadow.review.lifecycle import decide

S = ProposalState
BASE = TMR("allow-all", 1000, Endpoint.any(), Endpoint.any(), Action.ALLOW)
VMNS = (VMN("web-1"),)


def tmrset(*tmrs: TMR) -> TMRSet:
    return TMRSet(tmrs=(BASE, *tmrs), vmns=VMNS)


def applied(n: int, **overrides: object) -> Proposal:
    return make_proposal(n, state=S.APPLIED, **overrides)


def test_proposals_whose_rules_the_rollback_removed_are_undone() -> None:
    one, two, three = applied(1), applied(2), applied(3)  # rules tmr-1, tmr-2, tmr-3
    before = tmrset(make_rule(1), make_rule(2))  # tmr-3 was never in force here
    after = tmrset(make_rule(1))
    assert undone_by_rollback(before, after, [one, two, three]) == [two]


def test_a_rule_put_back_at_another_priority_is_undone_and_only_applied_proposals_count() -> None:
    moved = applied(1, kind=ProposalKind.REPRIORITIZE, rule=make_rule(1, priority=5))
    before = tmrset(make_rule(1, priority=5))
    after = tmrset(make_rule(1))  # the old priority back
    assert undone_by_rollback(before, after, [moved]) == [moved]
    assert undone_by_rollback(before, after, [replace(moved, state=S.APPROVED)]) == []
    assert undone_by_rollback(before, before, [moved]) == []


def test_recording_a_rollback_moves_proposals_once_and_lowers_trust(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    with open_store(url) as store:
        for n in (1, 2):
            proposal = make_proposal(n, recommender="refinement.scoped_deny")
            store.save_batch(proposals=[proposal])
            for target in (S.APPROVED, S.APPLIED):
                proposal, decision = decide(proposal, target, actor="alice", at=at(10 * n))
                store.record_decision(decision, proposal)
        before, after = tmrset(make_rule(1), make_rule(2)), tmrset(make_rule(1))
        trust_before = trust_from_outcomes(store.outcomes(), at(100), recommender="refinement.scoped_deny").trust

        (moved,) = record_tmrs_rollback(store, before, after, actor="bob", version=3, at=at(100))

        assert (moved.id, moved.state) == ("prop-2", S.ROLLED_BACK)
        stored = store.proposal("prop-2")
        assert stored is not None
        assert stored.state is S.ROLLED_BACK
        last = store.decisions("prop-2")[-1]
        assert (last.to_state, last.actor, last.reason) == (S.ROLLED_BACK, "bob", "TMRSet rolled back to version 3")
        (outcome,) = store.outcomes(proposal_id="prop-2")
        assert outcome.kind is OutcomeKind.ROLLED_BACK
        trust_after = trust_from_outcomes(store.outcomes(), at(100), recommender="refinement.scoped_deny").trust
        assert trust_after < trust_before
        assert store.proposal("prop-1").state is S.APPLIED  # type: ignore[union-attr]
        assert record_tmrs_rollback(store, before, after, actor="bob", version=3, at=at(101)) == []
        assert len(store.outcomes(proposal_id="prop-2")) == 1
