"""TemporaryExceptionRecommender: a time-boxed allow lifting a deny an administrator reported as a false positive."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.factories import T0, make_flow, make_proposal
from vmshadow.domain.flow import Flow
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.outcome import Outcome, OutcomeKind
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.refinement.recommender import RecommendContext, ReportedOutcome
from vmshadow.refinement.temporary_exception import TemporaryExceptionRecommender, TemporaryExceptionSettings

A = ipaddress.ip_address
NOW = T0 + timedelta(hours=2)
DENY = TMR("deny-backup", 40, Endpoint.vmn("vm1"), Endpoint.network("192.0.2.80"), Action.DENY, Protocol.TCP,
           (PortRange.single(873),), origin=Origin.PROPOSAL)  # fmt: skip
TMRS = TMRSet(
    tmrs=(TMR("allow-all", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW), replace(DENY, priority=30)),
    vmns=(VMN("vm1", addresses=(A("198.18.0.11"),)),),
)
APPLIED = make_proposal(
    1, state=ProposalState.APPLIED, recommender="refinement.scoped_deny", rule=DENY,
    evidence=Evidence(finding_ids=("find-9",), community_ids=("1:rsync0=",)),
)  # fmt: skip


def report(at_h: float = 1.0, kind: OutcomeKind = OutcomeKind.FALSE_POSITIVE, actor: str = "alice",
           proposal: Proposal = APPLIED) -> ReportedOutcome:  # fmt: skip
    outcome = Outcome(f"out-{actor}-{at_h}", proposal.id, proposal.recommender, kind, T0 + timedelta(hours=at_h),
                      actor=actor, detail="the nightly rsync backup")  # fmt: skip
    return ReportedOutcome(outcome, proposal)


def rsync(n: int) -> list[Flow]:
    return [
        make_flow(i, community_id=f"1:rsync{i}=", src_ip=A("198.18.0.11"), dst_ip=A("192.0.2.80"), dst_port=873,
                  src_vmn="vm1", dst_vmn=None, first_seen_at=T0 + timedelta(minutes=i),
                  last_seen_at=T0 + timedelta(minutes=i, seconds=5))
        for i in range(n)
    ]  # fmt: skip


def propose(reports: Sequence[ReportedOutcome], recorded: Sequence[Flow] = (), **settings: timedelta) -> list[Proposal]:
    recommender = TemporaryExceptionRecommender(TemporaryExceptionSettings(**settings))
    context = RecommendContext(now=NOW, flows=tuple(recorded), reports=tuple(reports))
    return recommender.propose([], TMRS, context)


def test_a_false_positive_gives_an_allow_just_ahead_of_the_deny_until_a_day_after_the_report() -> None:
    (p,) = propose([report()], rsync(5))
    assert p.kind is ProposalKind.TEMPORARY_EXCEPTION
    assert p.rule is not None
    assert (p.rule.src, p.rule.dst, p.rule.protocol, p.rule.ports) == (DENY.src, DENY.dst, DENY.protocol, DENY.ports)
    assert p.rule.action is Action.ALLOW
    assert p.rule.priority == 29, "ahead of the deny where the TMRSet has it now"
    assert p.rule.expires_at == T0 + timedelta(hours=25)
    assert p.impact.newly_allowed_flows == 5
    assert p.evidence.finding_ids == ("find-9",)
    assert p.evidence.measured["reported_by"] == "alice"
    assert "nightly rsync" in p.summary


def test_the_duration_is_a_setting_and_must_be_positive() -> None:
    (p,) = propose([report()], duration=timedelta(hours=4))
    assert p.rule is not None
    assert p.rule.expires_at == T0 + timedelta(hours=5)
    with pytest.raises(ValueError, match="duration must be positive"):
        TemporaryExceptionSettings(duration=timedelta(0))


def test_an_exception_that_would_already_have_expired_is_not_proposed() -> None:
    assert propose([report(at_h=-30)]) == []
    assert propose([report()], duration=timedelta(minutes=30)) == []


def test_only_false_positives_on_denies_are_lifted() -> None:
    assert propose([report(kind=OutcomeKind.ROLLED_BACK)]) == []
    allow = replace(APPLIED, rule=replace(DENY, action=Action.ALLOW))
    assert propose([report(proposal=allow)]) == []


def test_several_reports_on_one_deny_are_one_exception_timed_from_the_first() -> None:
    (p,) = propose([report(at_h=1.5, actor="bob"), report(at_h=1.0, actor="alice")])
    assert p.rule is not None
    assert p.rule.expires_at == T0 + timedelta(hours=25)
    assert p.evidence.measured["reported_by"] == "alice"


def test_proposing_again_later_gives_the_same_rule() -> None:
    first = propose([report()])
    later = TemporaryExceptionRecommender().propose(
        [], TMRS, RecommendContext(now=NOW + timedelta(hours=3), reports=(report(),))
    )
    assert [p.rule for p in later] == [p.rule for p in first]
    assert [p.id for p in later] == [p.id for p in first]


def test_a_deny_naming_a_vmn_the_tmrset_no_longer_knows_gives_nothing() -> None:
    gone = replace(APPLIED, rule=replace(DENY, src=Endpoint.vmn("vm9")))
    assert propose([report(proposal=gone)]) == []
