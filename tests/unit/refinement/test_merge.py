"""`keep_decision`: a proposal made again keeps the administrator's decision and takes the fresh measurements."""

from __future__ import annotations

from dataclasses import replace

from tests.factories import at, make_proposal
from vmshadow.domain.net import PortRange
from vmshadow.domain.proposal import Evidence, Impact, ProposalState
from vmshadow.domain.tmr import Origin
from vmshadow.refinement.merge import keep_decision, same_rule

OLD_IMPACT = Impact(flows_replayed=10, newly_blocked_flows=2, vmns_affected=("web-1",), examples=("1:old=",))
NEW_IMPACT = Impact(flows_replayed=900, newly_blocked_flows=40, vmns_affected=("web-1",), examples=("1:new=",))
STORED = make_proposal(
    1, state=ProposalState.APPROVED, impact=OLD_IMPACT, conflicts=("overrides_admin:old",), score=0.75,
    evidence=Evidence(finding_ids=("find-1",), community_ids=("1:a=",)),
)  # fmt: skip
FRESH = replace(
    STORED,
    state=ProposalState.PROPOSED,
    created_at=at(500),
    impact=NEW_IMPACT,
    conflicts=("pending_contradicts:prop-9",),
    evidence=Evidence(finding_ids=("find-2",), community_ids=("1:b=",)),
)


def test_on_a_score_tie_the_same_rule_brings_its_fresh_impact_and_conflicts() -> None:
    kept = keep_decision(STORED, FRESH)
    assert (kept.state, kept.created_at) == (STORED.state, STORED.created_at), "the decision stands"
    assert (kept.impact, kept.conflicts) == (NEW_IMPACT, FRESH.conflicts)
    assert kept.evidence.finding_ids == ("find-1", "find-2")
    assert kept.rule == STORED.rule


def test_a_stronger_stored_score_stays_but_the_impact_is_still_the_fresh_one() -> None:
    kept = keep_decision(replace(STORED, score=0.9), replace(FRESH, score=0.5))
    assert kept.score == 0.9
    assert (kept.impact, kept.conflicts) == (NEW_IMPACT, FRESH.conflicts)


def test_an_edited_rule_keeps_its_edit_and_its_own_numbers_whatever_the_fresh_score() -> None:
    assert STORED.rule is not None
    edited = replace(STORED, state=ProposalState.EDITED, rule=replace(STORED.rule, ports=(PortRange.single(22),)),
                     summary="edited: ssh only")  # fmt: skip
    kept = keep_decision(edited, replace(FRESH, score=0.99))
    assert (kept.state, kept.rule, kept.summary) == (ProposalState.EDITED, edited.rule, "edited: ssh only")
    assert (kept.impact, kept.conflicts) == (OLD_IMPACT, STORED.conflicts), "the fresh numbers are another rule's"
    assert kept.score == 0.99
    assert kept.evidence.finding_ids == ("find-1", "find-2")


def test_the_same_rule_is_judged_without_origin_and_comment() -> None:
    assert STORED.rule is not None
    fresh_rule = replace(STORED.rule, origin=Origin.ADMIN, comment="reworded")
    assert same_rule(STORED.rule, fresh_rule)
    assert not same_rule(STORED.rule, replace(STORED.rule, priority=STORED.rule.priority - 1))
    assert not same_rule(STORED.rule, replace(STORED.rule, expires_at=None))
    assert same_rule(None, None)
    assert not same_rule(STORED.rule, None)
    kept = keep_decision(STORED, replace(FRESH, rule=fresh_rule))
    assert kept.rule == replace(STORED.rule, origin=Origin.ADMIN), "who wrote it comes from now; the comment stays"
    assert kept.impact == NEW_IMPACT


def test_nothing_stored_gives_the_fresh_proposal() -> None:
    assert keep_decision(None, FRESH) is FRESH
