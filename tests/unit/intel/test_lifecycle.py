"""Per-source trust and decay, applied by the intel.match detector; TMRs proposed from an indicator expire with it."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import make_flow
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.intel.intel_match import IntelMatchDetector
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.proposal import ProposalKind
from vmshadow.domain.tmr import TMRSet
from vmshadow.intel.lifecycle import IntelPolicy, SourcePolicy
from vmshadow.refinement.recommender import RecommendContext
from vmshadow.refinement.scoped_deny import ScopedDenyRecommender

T0 = datetime(2026, 3, 1, tzinfo=UTC)
C2 = "203.0.113.9"
DAY = timedelta(days=1)


def c2(source: str = "feed", **kw: object) -> Indicator:
    return Indicator(IndicatorType.IPV4, C2, source, **kw)  # type: ignore[arg-type]


def contact(at: datetime) -> object:
    return make_flow(1, dst_ip=ipaddress.ip_address(C2), first_seen_at=at - timedelta(seconds=2), last_seen_at=at)


def test_trust_and_half_life_lower_the_effective_confidence() -> None:
    policy = IntelPolicy(
        sources=(("ipsum*", SourcePolicy(trust=0.5)), ("stix-feed", SourcePolicy(half_life=10 * DAY))),
        default=SourcePolicy(trust=0.9),
    )
    assert policy.confidence(c2("ipsum/level3.txt", confidence=80), T0) == 40
    dated = c2("stix-feed", confidence=80, valid_from=T0)
    assert policy.confidence(dated, T0) == 80
    assert policy.confidence(dated, T0 + 10 * DAY) == 40
    assert policy.confidence(dated, T0 + 20 * DAY) == 20
    assert policy.confidence(dated, T0 - DAY) == 80, "no growth before valid_from"
    assert policy.confidence(c2("stix-feed", confidence=80), T0 + 99 * DAY) == 80, "no valid_from: no decay"
    assert policy.confidence(c2("other", confidence=80), T0) == 72
    assert IntelPolicy().is_neutral
    assert not policy.is_neutral


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"trust": 1.5}, "trust"), ({"trust": -0.1}, "trust"), ({"half_life": timedelta(0)}, "half_life")],
)
def test_bad_policies_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SourcePolicy(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_confidence"):
        IntelPolicy(min_confidence=101)


def test_the_detector_scores_with_the_decayed_confidence_and_drops_matches_below_the_minimum() -> None:
    indicator = c2("feed", confidence=90, valid_from=T0)
    detector = IntelMatchDetector(None, DetectorContext(indicators=(indicator,)))
    detector.use_policy(IntelPolicy(default=SourcePolicy(half_life=10 * DAY), min_confidence=30))
    (fresh,) = detector.observe(contact(T0 + DAY))
    assert fresh.measured["confidence"] == round(90 * 0.5**0.1)
    assert fresh.measured["listed_confidence"] == 90
    assert fresh.score == pytest.approx(fresh.measured["confidence"] / 100)
    assert detector.observe(contact(T0 + 20 * DAY)) == [], "decayed to 22, below the minimum 30"


def test_a_deny_proposed_from_an_indicator_expires_with_it() -> None:
    until = T0 + 7 * DAY
    detector = IntelMatchDetector(None, DetectorContext(indicators=(c2(confidence=90, valid_until=until),)))
    (finding,) = detector.observe(contact(T0))
    assert finding.measured["indicator_valid_until"] == until.isoformat()
    (proposal,) = ScopedDenyRecommender().propose([finding], TMRSet(), RecommendContext(now=T0, trust=0.9))
    assert proposal.kind is ProposalKind.ADD_DENY
    assert proposal.rule is not None
    assert proposal.rule.expires_at == until


def test_an_indicator_expired_by_the_time_of_the_proposal_gives_an_alert() -> None:
    until = T0 + DAY
    detector = IntelMatchDetector(None, DetectorContext(indicators=(c2(confidence=90, valid_until=until),)))
    (finding,) = detector.observe(contact(T0))  # a retro-hunt finds the old contact after the indicator ended
    later = RecommendContext(now=until + DAY, trust=0.9)
    (proposal,) = ScopedDenyRecommender().propose([finding], TMRSet(), later)
    assert proposal.kind is ProposalKind.ALERT
    assert "expired" in proposal.summary


def test_an_indicator_without_valid_until_gives_a_rule_that_does_not_expire() -> None:
    detector = IntelMatchDetector(None, DetectorContext(indicators=(c2(confidence=90),)))
    (finding,) = detector.observe(contact(T0))
    assert "indicator_valid_until" not in finding.measured
    (proposal,) = ScopedDenyRecommender().propose([finding], TMRSet(), RecommendContext(now=T0, trust=0.9))
    assert proposal.rule is not None
    assert proposal.rule.expires_at is None
