"""Re-review on revocation: proposals resting only on revoked indicators are rejected (not yet enforced) or
brought back to an administrator by an alert (staged or applied); other proposals stand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.factories import at, make_finding, make_proposal
from tests.unit.intel.test_refresh import C2, T0, Clock, c2, contact
from vmshadow.adapters.sql import SqlStore, open_store
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.intel_refresh import IntelRefresh
from vmshadow.app.intel_revocation import RECOMMENDER, REVOKER, rereview_revoked
from vmshadow.config.intel_settings import IntelSettings
from vmshadow.domain.finding import Finding, FindingKind
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.intel.revocation import resting_on_revoked
from vmshadow.review.lifecycle import decide

S = ProposalState
EVIL = Indicator(IndicatorType.DOMAIN, "evil.example", "feed-a", confidence=90)
OTHER = Indicator(IndicatorType.IPV4, "203.0.113.7", "feed-b", confidence=90)


def intel_finding(n: int, indicator: Indicator) -> Finding:
    return make_finding(
        n,
        kind=FindingKind.INTEL_MATCH,
        detector="intel.match",
        indicator=indicator.value,
        measured={"indicator_source": indicator.source, "indicator_type": str(indicator.type), "confidence": 90},
    )


def resting_on(n: int, *findings: Finding, state: ProposalState = S.PROPOSED) -> Proposal:
    return make_proposal(n, state=state, evidence=Evidence(finding_ids=tuple(f.id for f in findings)))


def revoked(indicator: Indicator) -> Indicator:
    return Indicator(indicator.type, indicator.value, indicator.source, confidence=90, revoked=True)


def test_only_proposals_resting_entirely_on_revoked_indicators_are_named() -> None:
    evil, evil_too, other, scan = (
        intel_finding(1, EVIL),
        intel_finding(2, EVIL),
        intel_finding(3, OTHER),
        make_finding(4),
    )
    findings = {f.id: f for f in (evil, evil_too, other, scan)}
    only_evil = resting_on(1, evil, evil_too)
    evil_and_scan = resting_on(2, evil, scan)  # a scan supports it too: it stands
    evil_and_other = resting_on(3, evil, other)  # another indicator, still valid
    unknown = make_proposal(4, evidence=Evidence(finding_ids=(evil.id, "find-gone")))  # cannot be judged
    named = resting_on_revoked([only_evil, evil_and_scan, evil_and_other, unknown], findings, [revoked(EVIL)])
    assert [(r.proposal.id, r.indicators) for r in named] == [(only_evil.id, (("feed-a", "domain", "evil.example"),))]
    # the same value from another source is another indicator; an indicator that is not revoked names nothing
    other_source = Indicator(IndicatorType.DOMAIN, "evil.example", "feed-z", confidence=90, revoked=True)
    assert resting_on_revoked([only_evil], findings, [other_source]) == []
    assert resting_on_revoked([only_evil], findings, [EVIL]) == []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as s:
        yield s


def test_pending_ones_are_rejected_and_enforced_ones_get_one_alert(store: SqlStore) -> None:
    evil = intel_finding(1, EVIL)
    paths = {  # each reaches its state through the lifecycle, as in the service
        "proposed": [],
        "approved": [S.APPROVED],
        "staged": [S.STAGED],
        "approved while staged": [S.STAGED, S.APPROVED],  # still counting in the kernel
        "applied": [S.APPROVED, S.APPLIED],
        "rejected": [S.REJECTED],
    }
    stored = {name: resting_on(n, evil) for n, name in enumerate(paths, start=1)}
    store.save_batch(findings=[evil], proposals=list(stored.values()))
    for name, proposal in stored.items():
        for target in paths[name]:
            proposal, decision = decide(proposal, target, actor="alice", at=at(10), reason="r")
            store.record_decision(decision, proposal)

    done = rereview_revoked(store, [revoked(EVIL), OTHER], at(100))

    assert sorted(p.id for p in done.rejected) == sorted([stored["proposed"].id, stored["approved"].id])
    for name in ("proposed", "approved"):
        last = store.decisions(stored[name].id)[-1]
        assert (last.to_state, last.actor) == (S.REJECTED, REVOKER)
        assert "evil.example" in last.reason
        assert "revoked" in last.reason
    assert {p.id: p.state for p in store.proposals()}[stored["applied"].id] is S.APPLIED  # a person takes it out
    about = sorted(str(a.evidence.measured["proposal_id"]) for a in done.alerts)
    assert about == sorted(stored[name].id for name in ("staged", "approved while staged", "applied"))
    assert all(a.kind is ProposalKind.ALERT and a.recommender == RECOMMENDER for a in done.alerts)
    assert any("roll it back" in a.summary for a in done.alerts)

    dismissed, decision = decide(done.alerts[0], S.REJECTED, actor="bob", at=at(200), reason="known")
    store.record_decision(decision, dismissed)
    again = rereview_revoked(store, [revoked(EVIL)], at(300))
    assert again.rejected == []
    assert again.alerts == [], "asked once: a dismissed alert is not raised again"
    assert store.proposal(dismissed.id) is not None
    assert store.proposal(dismissed.id).state is S.REJECTED  # type: ignore[union-attr]


def test_the_refresh_duty_acts_on_a_revocation_and_hands_the_alerts_on(store: SqlStore) -> None:
    clock = Clock()
    handed: list[list[Proposal]] = []
    refresh = IntelRefresh(
        store, build_detectors(), IntelSettings(), clock=clock, on_stored=lambda f, p: handed.append(list(p))
    )
    store.save_batch(flows=[contact(1, T0 - timedelta(minutes=20))])
    clock.now = T0 + timedelta(seconds=30)
    store.save_indicators([c2()], at=clock.now)
    denies = [p for p in refresh().hunt.proposals if p.kind is ProposalKind.ADD_DENY]
    assert denies, f"a deny for the contact with {C2}"
    applied = denies[0]
    for target in (S.APPROVED, S.APPLIED):
        applied, decision = decide(applied, target, actor="alice", at=clock.now)
        store.record_decision(decision, applied)
    handed.clear()

    clock.now += timedelta(seconds=30)
    store.save_indicators([c2(revoked=True)], at=clock.now)
    report = refresh()
    assert sorted(p.id for p in report.rereview.rejected) == sorted(p.id for p in denies[1:])
    (alert,) = report.rereview.alerts
    assert alert.evidence.measured["proposal_id"] == applied.id
    assert handed == [[alert]], "the alert reaches the exporter like any stored proposal"
    assert refresh().rereview.alerts == [], "a revocation already acted on is not acted on again"
