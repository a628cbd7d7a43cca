"""Guard-rails: never-block list, blast-radius cap with override, rate cap; refusals become alerts that say why."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.factories import T0, make_finding, make_flow
from vmshadow.domain.finding import FindingKind
from vmshadow.domain.flow import TCP, UDP
from vmshadow.domain.proposal import ProposalKind
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.domain.vmn import VMN, Group
from vmshadow.refinement.guardrails import GuardContext, GuardRails, NeverBlock, RefusalReason, refuse
from vmshadow.refinement.recommender import RecommendContext
from vmshadow.refinement.scoped_deny import ScopedDenyRecommender

A = ipaddress.ip_address
VM1 = VMN("vm1", addresses=(A("198.18.0.11"),))
VM2 = VMN("vm2", addresses=(A("198.18.0.12"),))
TMRS = TMRSet(
    tmrs=(TMR("base", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN),),
    vmns=(VM1, VM2),
    groups=(Group("infra", networks=(ipaddress.ip_network("198.18.0.0/30"),)),),
)
DEFAULT_RAILS = GuardRails()
LAB_DNS = NeverBlock.of("198.18.0.2", "lab DNS resolver")


def finding(n: int = 0, **overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {
        "id": f"find-{n}",
        "src_ip": A("198.18.0.11"),
        "src_vmn": "vm1",
        "dst_ips": (A("198.18.0.12"),),
        "dst_ports": (22,),
        "protocol": TCP,
        "score": 0.8,
        "community_ids": (f"1:cited{n}",),
        "first_seen_at": T0 + timedelta(hours=n),
        "observed_at": T0 + timedelta(hours=n, seconds=30),
    }
    values.update(overrides)
    return make_finding(**values)


def propose(findings, flows=(), rails=DEFAULT_RAILS, recent=(), tmrset=TMRS):  # type: ignore[no-untyped-def]
    context = RecommendContext(
        now=T0 + timedelta(days=1), flows=tuple(flows), guard_rails=rails, recent_proposals=recent
    )
    return ScopedDenyRecommender().propose(findings, tmrset, context)


def benign(n: int, dst: str = "198.18.0.12", port: int = 22, **overrides: object):  # type: ignore[no-untyped-def]
    """A vm1 flow no finding cites, a day before every episode."""
    values: dict[str, object] = {
        "src_ip": A("198.18.0.11"),
        "src_vmn": "vm1",
        "dst_ip": A(dst),
        "dst_vmn": None,
        "dst_port": port,
        "first_seen_at": T0 - timedelta(days=1) + timedelta(seconds=n),
    }
    values.update(overrides)
    return make_flow(1000 + n, **values)


# ---------------------------------------------------------------- never-block


def test_a_deny_that_would_block_the_lab_dns_resolver_is_refused() -> None:
    to_dns = finding(dst_ips=(A("198.18.0.2"),), dst_ports=(53,), protocol=UDP)
    (allowed,) = propose([to_dns])
    assert allowed.kind is ProposalKind.ADD_DENY, "without a never-block list it is proposed"
    (refused,) = propose([to_dns], rails=GuardRails(never_block=(LAB_DNS,)))
    assert refused.kind is ProposalKind.ALERT
    assert refused.rule is None
    assert "never_block" in refused.summary
    assert "198.18.0.2/32 (lab DNS resolver)" in refused.summary
    assert refused.evidence == allowed.evidence
    assert refused.impact == allowed.impact
    assert refused.conflicts == allowed.conflicts
    assert refused.id != allowed.id


def test_never_block_judges_both_sides_and_every_endpoint_kind() -> None:
    rails = GuardRails(never_block=(LAB_DNS,))
    context = GuardContext(TMRS, T0)
    (deny,) = propose([finding()])

    def reasons(src: Endpoint, dst: Endpoint, action: Action = Action.DENY) -> list[str]:
        assert deny.rule is not None
        p = replace(deny, rule=replace(deny.rule, src=src, dst=dst, action=action))
        return [r.message for r in rails.check(p, context)]

    assert reasons(Endpoint.vmn("vm1"), Endpoint.vmn("vm2")) == []
    assert reasons(Endpoint.vmn("vm1"), Endpoint.any()) == [
        "it would deny traffic with a destination in never-block network 198.18.0.2/32 (lab DNS resolver)"
    ]
    assert reasons(Endpoint.network("198.18.0.0/24"), Endpoint.vmn("vm2")) != []
    assert reasons(Endpoint.group("infra"), Endpoint.vmn("vm2")) != []
    assert reasons(Endpoint.vmn("vm1"), Endpoint.any(), Action.ALLOW) == [], "allows are never refused"
    assert rails.check(refuse(deny, []), context) == [], "alerts are never refused"


# ---------------------------------------------------------------- blast radius


def test_a_blast_radius_breach_is_refused_unless_overridden() -> None:
    ssh = [benign(i) for i in range(6)]  # the deny would block these
    web = [benign(100 + i, port=443) for i in range(94)]  # vm1 -> vm2 https: not blocked
    (refused,) = propose([finding()], flows=ssh + web)
    assert refused.kind is ProposalKind.ALERT
    assert "blast_radius" in refused.summary
    assert "6 of 100 recent benign flows of VMN vm1" in refused.summary
    (overridden,) = propose([finding()], flows=ssh + web, rails=GuardRails(override_blast_radius=True))
    assert overridden.kind is ProposalKind.ADD_DENY
    assert overridden.impact.newly_blocked_flows == 6
    (within,) = propose([finding()], flows=ssh[:4] + web)
    assert within.kind is ProposalKind.ADD_DENY, "4 of 98 is under 5 %"
    (wider,) = propose([finding()], flows=ssh + web, rails=GuardRails(max_blocked_share=0.10))
    assert wider.kind is ProposalKind.ADD_DENY


def test_flows_findings_cite_or_that_belong_to_an_episode_are_not_benign() -> None:
    scan = finding()
    cited = benign(0, community_id="1:cited0")
    in_episode = benign(1, first_seen_at=T0 + timedelta(seconds=10))
    other_protocol = benign(2, first_seen_at=T0 + timedelta(seconds=10), protocol=UDP)
    later_to_target = benign(3, first_seen_at=T0 + timedelta(days=2))
    later_elsewhere = benign(4, first_seen_at=T0 + timedelta(days=2), dst="198.18.0.99")
    before = benign(5)
    flows = (cited, in_episode, other_protocol, later_to_target, later_elsewhere, before)
    context = GuardContext(TMRS, T0, flows, (scan,))
    assert [context.is_benign(f) for f in flows] == [False, False, True, False, True, True]
    assert context.benign_flows("vm1") == 3
    assert context.benign_flows("vm2") == 2, "VMNs come from labels, else from the TMRSet's addresses"
    (deny,) = propose([scan], flows=[cited, in_episode] + [benign(100 + i, dst="198.18.0.99") for i in range(5)])
    assert deny.kind is ProposalKind.ADD_DENY, "blocking only the scan's own flows is no blast"
    assert deny.impact.newly_blocked_flows == 2


# ---------------------------------------------------------------- rate cap


def test_the_rate_cap_lets_the_strongest_through_and_turns_the_rest_into_alerts() -> None:
    findings = [finding(i, dst_ips=(A(f"198.18.1.{i}"),), score=0.7 + i / 100) for i in range(4)]
    proposals = propose(findings, rails=GuardRails(max_proposals=2))
    assert [p.kind for p in proposals] == [ProposalKind.ALERT] * 2 + [ProposalKind.ADD_DENY] * 2
    assert all("rate_cap" in p.summary for p in proposals[:2])
    assert "cap 2" in proposals[0].summary


def test_the_rate_cap_counts_recent_proposals_in_the_window_and_lets_repeats_merge() -> None:
    one, two = finding(1, dst_ips=(A("198.18.1.1"),)), finding(2, dst_ips=(A("198.18.1.2"),))
    (first,) = propose([one])
    rails = GuardRails(max_proposals=1)
    (refused,) = propose([two], rails=rails, recent=[first])
    assert refused.kind is ProposalKind.ALERT
    (again,) = propose([one], rails=rails, recent=[first])
    assert again.kind is ProposalKind.ADD_DENY, "the same proposal again merges, it is not a new one"
    old = replace(first, created_at=first.created_at - timedelta(hours=2))
    (outside,) = propose([two], rails=rails, recent=[old])
    assert outside.kind is ProposalKind.ADD_DENY, "proposals older than the window do not count"
    others = replace(first, recommender="someone.else")
    (not_mine,) = propose([two], rails=rails, recent=[others])
    assert not_mine.kind is ProposalKind.ADD_DENY


def test_refusal_reasons_and_settings_are_checked() -> None:
    (deny,) = propose([finding(dst_ips=(A("198.18.0.2"),))])
    rails = GuardRails(never_block=(LAB_DNS,), max_proposals=0)
    refusals = rails.check(deny, GuardContext(TMRS, T0 + timedelta(days=1)))
    assert [r.reason for r in refusals] == [RefusalReason.NEVER_BLOCK, RefusalReason.RATE_CAP]
    assert str(refusals[0]).startswith("never_block: ")
    with pytest.raises(ValueError, match="max_blocked_share"):
        GuardRails(max_blocked_share=1.5)
    with pytest.raises(ValueError, match="max_proposals"):
        GuardRails(max_proposals=-1)


def test_earlier_contacts_with_a_listed_destination_are_not_benign() -> None:
    listed = A("198.18.0.4")
    hit = finding(
        kind=FindingKind.INTEL_MATCH, detector="intel.match", dst_ips=(listed,), dst_ports=(8443,), protocol=UDP,
        first_seen_at=T0 + timedelta(hours=1), observed_at=T0 + timedelta(hours=1), indicator=str(listed),
    )  # fmt: skip
    earlier = benign(0, dst=str(listed), port=8443, protocol=UDP)  # before anyone knew the address was bad
    elsewhere = benign(1, dst="198.18.0.12", port=8443, protocol=UDP)
    context = GuardContext(TMRS, T0 + timedelta(hours=2), (earlier, elsewhere), (hit,))
    assert [context.is_benign(f) for f in (earlier, elsewhere)] == [False, True]
    scan = finding()
    scan_context = GuardContext(TMRS, T0, (benign(2, first_seen_at=T0 - timedelta(hours=1)),), (scan,))
    assert scan_context.is_benign(scan_context.flows[0]), "for other findings, earlier contacts stay benign"
