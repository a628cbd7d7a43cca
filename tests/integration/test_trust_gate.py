"""Trust gates proposals: after reported false positives, the same evidence gives an alert, not a deny."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.datadir import shared_data
from tests.factories import make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.app.feedback import current_trust, report_false_positive
from vmshadow.app.offline import analyze_captures
from vmshadow.domain.proposal import ProposalKind, ProposalState
from vmshadow.domain.tmr import TMRSet
from vmshadow.refinement.scoped_deny import ScopedDenyRecommender
from vmshadow.review.lifecycle import decide

NOW = datetime(2026, 11, 25, tzinfo=UTC)
NAME = ScopedDenyRecommender.name


def applied_proposal(db: str, n: int) -> str:
    store = open_store(db)
    proposal = make_proposal(n, recommender=NAME)
    store.save_batch(proposals=[proposal])
    for target in (ProposalState.APPROVED, ProposalState.APPLIED):
        proposal, decision = decide(proposal, target, actor="alice", at=NOW - timedelta(hours=1))
        store.record_decision(decision, proposal)
    store.close()
    return proposal.id


def test_false_positives_turn_the_next_deny_into_an_alert(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    capture = shared_data() / "zeek/traces/ssh/sshguess.pcap"
    trusted = analyze_captures([capture], TMRSet(), now=NOW, db_url=db)
    assert [p.kind for p in trusted.proposals] == [ProposalKind.ADD_DENY]

    for n in (1, 2, 3):
        report_false_positive(db, applied_proposal(db, n), actor="alice", reason="a backup job, not an attack", at=NOW)
    assert current_trust(db, NAME, NOW) < ScopedDenyRecommender().settings.min_trust

    distrusted = analyze_captures([capture], TMRSet(), now=NOW, db_url=db)
    assert [p.kind for p in distrusted.proposals] == [ProposalKind.ALERT]
    assert "trust" in distrusted.proposals[0].summary
