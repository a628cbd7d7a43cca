"""`measure` reads findings bounded by the oldest apply, plus each applied proposal's evidence by id."""

from __future__ import annotations

from pathlib import Path

from tests.factories import at, make_finding, make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.app.feedback import measure
from vmshadow.domain.outcome import OutcomeKind
from vmshadow.domain.proposal import ProposalState
from vmshadow.review.lifecycle import decide


def test_evidence_older_than_the_apply_is_still_read_and_earlier_findings_do_not_count(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    with open_store(url) as store:
        evidence = make_finding(1, observed_at=at(30))  # what the proposal was made from, before the apply
        before = make_finding(2, observed_at=at(40))  # the same scanner, still before the apply
        p = make_proposal(1)
        store.save_batch(findings=[evidence, before], proposals=[p])
        for target, t in ((ProposalState.APPROVED, at(90)), (ProposalState.APPLIED, at(100))):
            p, decision = decide(p, target, actor="alice", at=t)
            store.record_decision(decision, p)
    (stopped,) = measure(url, {}, at=at(100 + 3600))
    assert (stopped.kind, stopped.proposal_id) == (OutcomeKind.FINDING_STOPPED, "prop-1")
    with open_store(url) as store:
        store.save_batch(findings=[make_finding(3, observed_at=at(200))])  # after the apply: it went on
    (continued,) = measure(url, {}, at=at(100 + 3700))
    assert (continued.kind, continued.value) == (OutcomeKind.FINDING_CONTINUED, 1)


def test_rollbacks_are_read_from_rolled_back_proposals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    with open_store(url) as store:
        p, q = make_proposal(1), make_proposal(2)
        store.save_batch(proposals=[p, q])
        for target, t in ((ProposalState.APPROVED, at(10)), (ProposalState.APPLIED, at(20))):
            p, decision = decide(p, target, actor="alice", at=t)
            store.record_decision(decision, p)
        p, decision = decide(p, ProposalState.ROLLED_BACK, actor="alice", at=at(30), reason="wrong")
        store.record_decision(decision, p)
    assert [(o.kind, o.proposal_id) for o in measure(url, {}, at=at(40))] == [(OutcomeKind.ROLLED_BACK, "prop-1")]
    assert measure(url, {}, at=at(40)) == []
