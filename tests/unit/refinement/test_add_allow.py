"""LeastPrivilegeRecommender: which flows count, the narrow allow set, placement, groups, impact."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import timedelta

import pytest

from tests.factories import T0, make_finding, make_flow
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import Proposal, ProposalKind
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.domain.vmn import VMN, Group
from vmshadow.refinement.add_allow import LeastPrivilegeRecommender, LeastPrivilegeSettings, is_broad
from vmshadow.refinement.recommender import RecommendContext

A = ipaddress.ip_address
ADDRESS = {"vm1": "198.18.0.11", "vm2": "198.18.0.12", "vm3": "198.18.0.13", "vm4": "198.18.0.14"}
NAME = {a: n for n, a in ADDRESS.items()}
VMNS = tuple(VMN(n, addresses=(A(a),)) for n, a in ADDRESS.items())
NOW = T0 + timedelta(hours=1)


def tmrset(*tmrs: TMR, groups: Sequence[Group] = (), default: Action = Action.DENY) -> TMRSet:
    return TMRSet(tmrs=tmrs, vmns=VMNS, groups=tuple(groups), vmn_defaults=dict.fromkeys(ADDRESS, default))


def flows(tag: str, n: int, src: str, dst: str, port: int, protocol: int = TCP, age_h: float = 0) -> list[Flow]:
    src_ip, dst_ip = A(ADDRESS.get(src, src)), A(ADDRESS.get(dst, dst))
    start = NOW - timedelta(hours=age_h, minutes=30)
    return [
        make_flow(
            i, id=f"{tag}-{i}", community_id=f"1:{tag}{i}=", src_ip=src_ip, dst_ip=dst_ip, dst_port=port,
            protocol=protocol, src_vmn=NAME.get(str(src_ip)), dst_vmn=NAME.get(str(dst_ip)),
            first_seen_at=start + timedelta(seconds=i), last_seen_at=start + timedelta(seconds=i + 1),
        )
        for i in range(n)
    ]  # fmt: skip


def propose(
    tmrs: TMRSet, recorded: Sequence[Flow], findings: Sequence[Finding] = (), **settings: int
) -> list[Proposal]:
    recommender = LeastPrivilegeRecommender(LeastPrivilegeSettings(**settings))
    return recommender.propose(findings, tmrs, RecommendContext(now=NOW, flows=tuple(recorded)))


def allows(proposals: Sequence[Proposal]) -> dict[tuple[str, str], TMR]:
    return {(str(p.rule.src), str(p.rule.dst)): p.rule for p in proposals if p.rule is not None}


def test_under_the_default_deny_the_observed_ports_are_allowed_and_nothing_more() -> None:
    recorded = (
        flows("db", 5, "vm1", "vm2", 5432) + flows("web", 4, "vm1", "vm2", 443) + flows("once", 1, "vm1", "vm2", 22)
    )
    (p,) = propose(tmrset(), recorded)
    assert p.kind is ProposalKind.ADD_ALLOW
    assert p.rule is not None
    assert (p.rule.src, p.rule.dst, p.rule.protocol) == (Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Protocol.TCP)
    assert p.rule.ports == (PortRange.single(443), PortRange.single(5432)), "port 22 was seen once: below min_flows"
    assert p.rule.action is Action.ALLOW
    assert p.impact.newly_allowed_flows == 9
    assert p.impact.newly_blocked_flows == 0
    assert set(p.evidence.community_ids) == {f.community_id for f in recorded[:9]}
    assert p.evidence.finding_ids == ()
    assert p.score == pytest.approx(9 / 12)


def test_too_few_flows_propose_nothing() -> None:
    assert propose(tmrset(), flows("db", 2, "vm1", "vm2", 5432)) == []
    assert propose(tmrset(), flows("db", 2, "vm1", "vm2", 5432), min_flows=2) != []


def test_flows_a_finding_cites_or_that_belong_to_its_episode_are_not_legitimate() -> None:
    recorded = flows("ssh", 6, "vm1", "vm2", 22)
    cited = make_finding(1, src_ip=A(ADDRESS["vm1"]), src_vmn="vm1", dst_ips=(A(ADDRESS["vm2"]),), dst_ports=(22,),
                         community_ids=("1:ssh0=",), first_seen_at=recorded[0].first_seen_at,
                         observed_at=recorded[-1].first_seen_at)  # fmt: skip
    assert propose(tmrset(), recorded, [cited]) == []
    # a finding about someone else leaves them legitimate
    other = make_finding(2, src_ip=A(ADDRESS["vm3"]), src_vmn="vm3", community_ids=())
    assert propose(tmrset(), recorded, [other]) != []


def test_an_administrators_deny_and_a_narrow_allow_are_left_alone() -> None:
    recorded = flows("db", 5, "vm1", "vm2", 5432)
    deny = TMR("no-db", 10, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.DENY, Protocol.TCP)
    narrow = TMR("db-ok", 10, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.TCP,
                 (PortRange.single(5432),))  # fmt: skip
    assert propose(tmrset(deny), recorded) == []
    assert propose(tmrset(narrow), recorded) == []


def test_under_a_broad_allow_the_narrow_allow_goes_just_ahead_of_it_and_changes_nothing_yet() -> None:
    broad = TMR("allow-all", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW)
    (p,) = propose(tmrset(broad), flows("db", 5, "vm1", "vm2", 5432))
    assert p.rule is not None
    assert p.rule.priority == 99
    assert (p.impact.newly_allowed_flows, p.impact.newly_blocked_flows) == (0, 0)
    assert "allow-all" in p.summary
    assert p.evidence.measured["decided_by"] == "allow-all"


def test_the_default_allow_counts_as_broad_too() -> None:
    (p,) = propose(tmrset(default=Action.ALLOW), flows("db", 5, "vm1", "vm2", 5432))
    assert p.rule is not None
    assert p.evidence.measured["decided_by"] == "default"


@pytest.mark.parametrize(
    ("tmr", "broad"),
    [
        (TMR("a", 1, Endpoint.any(), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.TCP, (PortRange.single(1),)), True),
        (TMR("b", 1, Endpoint.vmn("vm1"), Endpoint.any(), Action.ALLOW, Protocol.TCP, (PortRange.single(1),)), True),
        (TMR("c", 1, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.ALLOW), True),
        (TMR("d", 1, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.UDP), True),
        (TMR("e", 1, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.UDP, (PortRange(1, 9),)), False),
        (TMR("f", 1, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.ICMP), False),
    ],
)
def test_what_counts_as_broad(tmr: TMR, broad: bool) -> None:
    assert is_broad(tmr) is broad


def test_a_group_whose_members_were_all_seen_is_reused() -> None:
    recorded = flows("a", 3, "vm1", "vm2", 5432) + flows("b", 3, "vm1", "vm3", 5432)
    exact = Group("db", vmns=("vm2", "vm3"))
    (p,) = propose(tmrset(groups=[exact]), recorded)
    assert p.rule is not None
    assert p.rule.dst == Endpoint.group("db")
    assert p.impact.newly_allowed_flows == 6


def test_a_group_with_members_nobody_used_is_not_reused() -> None:
    recorded = flows("a", 3, "vm1", "vm2", 5432) + flows("b", 3, "vm1", "vm3", 5432)
    wider = Group("db", vmns=("vm2", "vm3", "vm4"))
    assert set(allows(propose(tmrset(groups=[wider]), recorded))) == {("vm1", "vm2"), ("vm1", "vm3")}


def test_groups_are_reused_on_the_source_side_and_for_outside_networks() -> None:
    recorded = flows("a", 3, "vm1", "192.0.2.53", 53, UDP) + flows("b", 3, "vm4", "192.0.2.53", 53, UDP)
    groups = [
        Group("clients", vmns=("vm1", "vm4")),
        Group("resolver", networks=(ipaddress.ip_network("192.0.2.53/32"),)),
    ]
    (p,) = propose(tmrset(groups=groups), recorded)
    assert p.rule is not None
    assert (p.rule.src, p.rule.dst, p.rule.protocol) == (
        Endpoint.group("clients"),
        Endpoint.group("resolver"),
        Protocol.UDP,
    )
    assert p.impact.newly_allowed_flows == 6


def test_an_outside_destination_is_its_host_address() -> None:
    (p,) = propose(tmrset(), flows("out", 3, "vm1", "192.0.2.80", 443))
    assert p.rule is not None
    assert p.rule.dst == Endpoint.network("192.0.2.80/32")


def test_too_many_port_ranges_become_every_port_of_the_protocol() -> None:
    recorded = [f for port in range(1000, 1020, 2) for f in flows(f"p{port}", 3, "vm1", "vm2", port)]
    (p,) = propose(tmrset(), recorded, max_port_ranges=4)
    assert p.rule is not None
    assert p.rule.ports == ()
    assert p.rule.protocol is Protocol.TCP


def test_flows_older_than_the_impact_window_are_not_observed() -> None:
    recent = flows("new", 5, "vm3", "vm4", 80)  # the archive reaches up to now: its window is the last 24 h
    assert set(allows(propose(tmrset(), flows("old", 5, "vm1", "vm2", 5432, age_h=30) + recent))) == {("vm3", "vm4")}


def test_unknown_sources_and_bad_settings() -> None:
    assert propose(tmrset(), flows("out", 5, "192.0.2.9", "vm2", 80)) == [], "only VMNs get least privilege"
    with pytest.raises(ValueError, match="min_flows"):
        LeastPrivilegeSettings(min_flows=0)
