"""What the store adds to a recommender's context: false-positive reports, past and recent proposals."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.factories import T0, make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.app.feedback import report_false_positive, with_records
from vmshadow.domain.proposal import ProposalState
from vmshadow.refinement.guardrails import GuardRails
from vmshadow.refinement.recommender import RecommendContext
from vmshadow.review.lifecycle import decide

NOW = T0 + timedelta(days=10)


def test_reports_with_their_proposals_and_proposals_by_age(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    with open_store(url) as store:
        old = make_proposal(1, created_at=NOW - timedelta(days=8))  # outside the 7-day lookback
        week = make_proposal(2, created_at=NOW - timedelta(days=2))
        hour = make_proposal(3, created_at=NOW - timedelta(minutes=30))
        store.save_batch(proposals=[old, week, hour])
        for target in (ProposalState.APPROVED, ProposalState.APPLIED):
            week, decision = decide(week, target, actor="alice", at=NOW - timedelta(days=1))
            store.record_decision(decision, week)
    report_false_positive(url, "prop-2", actor="alice", reason="the backup", at=NOW - timedelta(hours=3))
    with open_store(url) as store:
        context = with_records(store, RecommendContext(NOW, guard_rails=GuardRails(rate_window=timedelta(hours=1))))
    assert [p.id for p in context.past_proposals] == ["prop-2", "prop-3"]
    assert [p.id for p in context.recent_proposals] == ["prop-3"]
    (reported,) = context.reports
    assert (reported.outcome.detail, reported.proposal.id, reported.proposal.state) == (
        "the backup",
        "prop-2",
        ProposalState.APPLIED,
    )
    later = RecommendContext(NOW + timedelta(days=8))
    with open_store(url) as store:
        assert with_records(store, later).reports == ()
