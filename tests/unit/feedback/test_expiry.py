"""The sweeper moves applied proposals whose rule expired to `expired`, once, with a neutral outcome."""

from __future__ import annotations

from pathlib import Path

from tests.factories import at, make_proposal, make_rule
from vmshadow.adapters.sql import open_store
from vmshadow.app.sweeper import sweep_expired
from vmshadow.domain.outcome import OutcomeKind
from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.feedback.expiry import SWEEPER, expiries
from vmshadow.review.lifecycle import decide

S = ProposalState


def temporary(n: int, expires_s: float | None, state: ProposalState = S.APPLIED) -> Proposal:
    expires = at(expires_s) if expires_s is not None else None
    return make_proposal(n, state=state, rule=make_rule(n, expires_at=expires))


def test_only_applied_proposals_whose_rule_ran_out_expire() -> None:
    ran_out = temporary(1, 50)
    at_the_second = temporary(2, 100)
    still_running = temporary(3, 101)
    permanent = temporary(4, None)
    approved_only = temporary(5, 50, state=S.APPROVED)  # never in force: nothing expired
    moved = expiries([ran_out, at_the_second, still_running, permanent, approved_only], at(100))
    assert [p.id for p, _ in moved] == [ran_out.id, at_the_second.id]
    proposal, decision = moved[0]
    assert proposal.state is S.EXPIRED
    assert (decision.from_state, decision.to_state, decision.actor) == (S.APPLIED, S.EXPIRED, SWEEPER)
    assert decision.decided_at == at(50)  # when the rule stopped deciding, not when it was noticed
    assert "expired" in decision.reason


def test_the_sweep_records_each_expiry_once_with_an_expired_outcome(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    with open_store(url) as store:
        for proposal in (temporary(1, 50), temporary(2, 500)):
            store.save_batch(proposals=[make_proposal(0, id=proposal.id, rule=proposal.rule)])
            pending = store.proposal(proposal.id)
            assert pending is not None
            for target in (S.APPROVED, S.APPLIED):
                pending, decision = decide(pending, target, actor="alice", at=at(10))
                store.record_decision(decision, pending)

    (moved,) = sweep_expired(url, at(100))
    assert moved.id == temporary(1, 50).id
    assert sweep_expired(url, at(100)) == []  # nothing left to move: no second decision, no second outcome
    with open_store(url) as store:
        assert [p.id for p in store.proposals(state=S.EXPIRED)] == [moved.id]
        assert [p.id for p in store.proposals(state=S.APPLIED)] == [temporary(2, 500).id]
        assert [d.to_state for d in store.decisions(moved.id)] == [S.APPROVED, S.APPLIED, S.EXPIRED]
        outcomes = store.outcomes(proposal_id=moved.id)
        assert [o.kind for o in outcomes] == [OutcomeKind.EXPIRED]
