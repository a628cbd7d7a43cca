"""A growing attack gives one proposal to review: a wider fresh proposal takes a waiting one's place, a narrower one
joins it, and anything someone already acted on is left alone."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.factories import make_proposal, make_rule
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint
from vmshadow.refinement.widen import covers, placed

NARROW = make_rule(1, ports=(PortRange(22, 22), PortRange(80, 80)))
WIDE = make_rule(2, ports=())  # every tcp port


def proposal(n: int, rule: TMR, **overrides: Any) -> Proposal:
    return make_proposal(n, rule=rule, evidence=Evidence((f"find-{n}",), (f"1:{n}=",), {"ports": n}), **overrides)


@pytest.mark.parametrize(
    ("wide", "narrow", "expected"),
    [
        (WIDE, NARROW, True),
        (NARROW, WIDE, False),
        (make_rule(3, ports=(PortRange(1, 1024),)), NARROW, True),
        (make_rule(3, ports=(PortRange(1, 50),)), NARROW, False),  # 80 is outside
        (replace(WIDE, protocol=Protocol.ANY, ports=()), NARROW, True),
        (replace(WIDE, protocol=Protocol.UDP), NARROW, False),
        (replace(WIDE, dst=Endpoint.any()), NARROW, True),
        (replace(WIDE, dst=Endpoint.network("2001:db8::/48")), NARROW, False),  # narrower network than /32
        (replace(WIDE, src=Endpoint.vmn("db-1")), NARROW, False),
        (replace(WIDE, action=Action.ALLOW), NARROW, False),
    ],
)
def test_covers(wide: TMR, narrow: TMR, expected: bool) -> None:
    assert covers(wide, narrow) is expected


def test_a_wider_fresh_proposal_takes_the_waiting_ones_place_with_all_the_evidence() -> None:
    waiting = proposal(1, NARROW, score=0.7)
    fresh = proposal(2, WIDE, score=0.9)
    got = placed(fresh, [waiting])
    assert (got.id, got.created_at, got.rule, got.score) == (waiting.id, waiting.created_at, WIDE, 0.9)
    assert got.evidence.finding_ids == ("find-1", "find-2")
    assert got.evidence.community_ids == ("1:1=", "1:2=")
    assert got.evidence.measured == {"ports": 2}
    assert got.summary == fresh.summary


def test_a_narrower_fresh_proposal_joins_the_wider_waiting_one() -> None:
    waiting = proposal(1, WIDE, score=0.9)
    got = placed(proposal(2, NARROW, score=0.6), [waiting])
    assert (got.id, got.rule, got.score) == (waiting.id, WIDE, 0.9)
    assert got.evidence.finding_ids == ("find-1", "find-2")


@pytest.mark.parametrize(
    "state",
    [s for s in ProposalState if s is not ProposalState.PROPOSED],
)
def test_a_proposal_someone_acted_on_is_never_changed(state: ProposalState) -> None:
    fresh = proposal(2, WIDE)
    assert placed(fresh, [proposal(1, NARROW, state=state)]) is fresh


def test_unrelated_or_other_recommenders_proposals_stand_apart() -> None:
    fresh = proposal(2, WIDE)
    others = [
        proposal(1, NARROW, recommender="someone.else"),
        proposal(3, replace(NARROW, src=Endpoint.vmn("db-1"))),
        make_proposal(4, rule=None, kind=ProposalKind.ALERT),
    ]
    assert placed(fresh, others) is fresh


def test_the_same_rule_made_again_brings_its_newer_impact() -> None:
    waiting = proposal(1, WIDE, score=0.9)
    again = proposal(2, replace(WIDE, id="tmr-again"), score=0.9)
    again = replace(again, impact=replace(again.impact, newly_blocked_flows=650, flows_replayed=700))
    got = placed(again, [waiting])
    assert (got.id, got.created_at) == (waiting.id, waiting.created_at)
    assert (got.impact.newly_blocked_flows, got.impact.flows_replayed) == (650, 700)
    assert got.evidence.finding_ids == ("find-1", "find-2")
