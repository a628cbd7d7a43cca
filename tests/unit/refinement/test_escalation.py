"""Escalating temporary-deny durations for repeat offenders."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.factories import T0, make_proposal, make_rule
from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import Action, Endpoint
from vmshadow.refinement.escalation import EscalationLadder, deny_duration, strikes

NOW = T0 + timedelta(days=1)
OFFENDER = Endpoint.vmn("web-1")  # make_rule's source


def deny(n: int, state: ProposalState = ProposalState.APPLIED, ago: timedelta = timedelta(hours=1)) -> Proposal:
    return make_proposal(n, state=state, created_at=NOW - ago, rule=make_rule(n, expires_at=NOW))


@pytest.mark.parametrize(("earlier", "hours"), [(0, 1), (1, 4), (2, 24), (3, 24), (7, 24)])
def test_each_strike_climbs_the_ladder_up_to_its_last_step(earlier: int, hours: int) -> None:
    past = [deny(i) for i in range(earlier)]
    assert deny_duration(OFFENDER, past, NOW) == timedelta(hours=hours)


def test_the_cap_bounds_every_step() -> None:
    ladder = EscalationLadder(cap=timedelta(hours=2))
    assert deny_duration(OFFENDER, [deny(1), deny(2)], NOW, ladder) == timedelta(hours=2)
    assert deny_duration(OFFENDER, [], NOW, ladder) == timedelta(hours=1)


def test_only_denies_that_went_into_force_for_this_offender_recently_count() -> None:
    past = [
        deny(1, ProposalState.REJECTED),
        deny(2, ProposalState.ROLLED_BACK),
        deny(3, ProposalState.PROPOSED),
        deny(10, ProposalState.APPROVED),  # approved, not applied yet: it has stopped nothing
        deny(4, ago=timedelta(days=8)),  # outside the 7-day lookback
        replace(deny(5), rule=make_rule(5, src=Endpoint.vmn("other"), expires_at=NOW)),
        replace(deny(6), rule=make_rule(6, expires_at=None)),  # a permanent deny is not a temporary one
        replace(deny(7), rule=make_rule(7, action=Action.ALLOW, expires_at=NOW), kind=ProposalKind.ADD_ALLOW),
    ]
    assert strikes(OFFENDER, past, NOW, timedelta(days=7)) == 0
    counted = [deny(8, ProposalState.EXPIRED), deny(9), deny(9)]  # the same one twice
    assert strikes(OFFENDER, [*past, *counted], NOW, timedelta(days=7)) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": ()}, "at least one step"),
        ({"steps": (timedelta(hours=4), timedelta(hours=1))}, "must not get shorter"),
        ({"steps": (timedelta(0),)}, "must be positive"),
        ({"cap": timedelta(0)}, "must be positive"),
    ],
)
def test_a_bad_ladder_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EscalationLadder(**kwargs)  # type: ignore[arg-type]
