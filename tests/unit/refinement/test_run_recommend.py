"""run_recommend over every registered recommender, and which ones run per batch or on a schedule."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from tests.factories import T0, make_flow
from vmshadow.domain.proposal import ProposalKind
from vmshadow.domain.tmr import Action, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.refinement.recommender import RecommendContext, recommender_types
from vmshadow.stages.recommend import per_batch, run_recommend, scheduled

A = ipaddress.ip_address


def test_least_privilege_is_scheduled_and_the_finding_driven_ones_run_per_batch() -> None:
    everyone = [cls() for cls in recommender_types().values()]
    assert [r.name for r in scheduled(everyone)] == ["refinement.least_privilege"]
    assert {r.name for r in per_batch(everyone)} == {r.name for r in everyone} - {"refinement.least_privilege"}


def test_a_scheduled_run_needs_no_findings_and_each_recommender_sees_its_own_trust() -> None:
    tmrset = TMRSet(vmns=(VMN("vm1", addresses=(A("198.18.0.11"),)),), vmn_defaults={"vm1": Action.DENY})
    flows = tuple(
        make_flow(i, community_id=f"1:{i}=", src_ip=A("198.18.0.11"), src_vmn="vm1", dst_ip=A("192.0.2.80"),
                  first_seen_at=T0 + timedelta(seconds=i), last_seen_at=T0 + timedelta(seconds=i + 1))
        for i in range(4)
    )  # fmt: skip
    recommenders = scheduled([cls() for cls in recommender_types().values()])
    context = RecommendContext(now=T0 + timedelta(minutes=5), flows=flows)
    (allow,) = run_recommend([], tmrset, recommenders, context)
    assert allow.kind is ProposalKind.ADD_ALLOW
    assert allow.impact.newly_allowed_flows == 4
    (alert,) = run_recommend([], tmrset, recommenders, context, trust={"refinement.least_privilege": 0.1})
    assert alert.kind is ProposalKind.ALERT
    assert alert.trust == 0.1
