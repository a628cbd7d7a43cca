"""ScopedDenyRecommender: scope, alert fallbacks, merging, impact."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import timedelta

from tests.factories import T0, make_finding, make_flow
from vmshadow.domain.finding import SHARED_RESOLVERS, FindingKind
from vmshadow.domain.flow import TCP, UDP
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.refinement.recommender import RecommendContext
from vmshadow.refinement.scoped_deny import ScopedDenyRecommender, ScopedDenySettings

A = ipaddress.ip_address
VM1 = VMN("vm1", addresses=(A("198.18.0.11"),))
TARGET = VMN("vm2", addresses=(A("198.18.0.12"),))
TMRS = TMRSet(
    tmrs=(TMR("base", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW),),
    vmns=(VM1, TARGET),
)


def scan(**overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {
        "src_ip": A("198.18.0.11"),
        "src_vmn": "vm1",
        "dst_ips": (A("198.18.0.12"),),
        "dst_ports": tuple(range(1, 40)),
        "protocol": TCP,
        "score": 0.8,
        "community_ids": ("1:a", "1:b"),
    }
    values.update(overrides)
    return make_finding(**values)


def propose(findings, tmrset=TMRS, flows=(), trust=0.5, settings=None):  # type: ignore[no-untyped-def]
    return ScopedDenyRecommender(settings).propose(
        findings, tmrset, RecommendContext(now=T0, flows=tuple(flows), trust=trust)
    )


def test_deny_is_scoped_to_the_offending_vmn_and_its_target() -> None:
    (p,) = propose([scan()])
    assert p.kind is ProposalKind.ADD_DENY
    assert p.rule is not None
    assert (p.rule.src, p.rule.dst) == (Endpoint.vmn("vm1"), Endpoint.vmn("vm2"))
    assert p.rule.ports == (), "many ports: the deny covers the protocol"
    assert p.rule.priority == 99, "placed before every existing TMR"
    assert p.rule.action is Action.DENY


def test_few_ports_are_listed_and_an_outside_offender_is_an_address() -> None:
    (p,) = propose([scan(src_ip=A("192.0.2.7"), src_vmn=None, dst_ports=(22,))])
    assert p.rule is not None
    assert p.rule.src == Endpoint.network("192.0.2.7/32")
    assert [str(r) for r in p.rule.ports] == ["22"]


def test_horizontal_targets_within_a_24_become_that_network_else_any() -> None:
    near = scan(dst_ips=(A("198.18.5.1"), A("198.18.5.77")))
    far = scan(dst_ips=(A("198.18.5.1"), A("198.19.0.1")), first_seen_at=T0 + timedelta(hours=1))
    first, second = propose([near, far])
    assert first.rule is not None
    assert second.rule is not None
    assert first.rule.dst == Endpoint.network("198.18.5.0/24")
    assert second.rule.dst.kind is EndpointKind.ANY


def test_weak_evidence_low_trust_or_dns_names_give_alerts() -> None:
    assert propose([scan(score=0.5)])[0].kind is ProposalKind.ALERT
    assert propose([scan()], trust=0.1)[0].kind is ProposalKind.ALERT
    dns = scan(kind=FindingKind.INTEL_MATCH, dst_ips=(), measured={"matched_field": "dns_query"}, indicator="x.test")
    (alert,) = propose([dns])
    assert alert.kind is ProposalKind.ALERT
    assert alert.rule is None
    assert "no TMR can express" in alert.summary
    assert propose([scan(score=0.5)], settings=ScopedDenySettings(deny_min_score=0.4))[0].kind is ProposalKind.ADD_DENY


def test_traffic_already_denied_gives_an_alert() -> None:
    blocked = TMRSet(tmrs=(TMR("no", 1, Endpoint.vmn("vm1"), Endpoint.any(), Action.DENY),), vmns=(VM1, TARGET))
    flows = [make_flow(i, community_id=c, src_ip=A("198.18.0.11"), src_vmn="vm1") for i, c in enumerate(["1:a", "1:b"])]
    (p,) = propose([scan()], tmrset=blocked, flows=flows)
    assert p.kind is ProposalKind.ALERT
    assert "already deny" in p.summary


def test_findings_of_one_episode_make_one_proposal_with_all_evidence() -> None:
    early = scan(id="f1", dst_ports=(1, 2, 3), community_ids=("1:a",), observed_at=T0 + timedelta(seconds=5))
    late = scan(id="f2", community_ids=("1:b", "1:c"), observed_at=T0 + timedelta(seconds=50), score=0.9)
    (p,) = propose([early, late])
    assert p.evidence.finding_ids == ("f1", "f2")
    assert set(p.evidence.community_ids) == {"1:a", "1:b", "1:c"}
    assert p.score == 0.9
    assert p.rule is not None
    assert p.rule.ports == (), "the latest, widest finding sets the scope"


def test_identical_rules_from_different_episodes_merge() -> None:
    one = scan(id="f1")
    two = scan(id="f2", first_seen_at=T0 + timedelta(hours=2))
    (p,) = propose([one, two])
    assert p.evidence.finding_ids == ("f1", "f2")


def test_impact_equals_an_independent_count() -> None:
    flows = []
    for i in range(40):
        src = "198.18.0.11" if i % 3 else "198.18.0.13"
        dst = "198.18.0.12" if i % 2 else "198.18.0.14"
        flows.append(make_flow(i, src_ip=A(src), dst_ip=A(dst), src_vmn=None, dst_vmn=None, dst_port=i))
    (p,) = propose([scan()], flows=flows)
    expected = sum(1 for f in flows if str(f.src_ip) == "198.18.0.11" and str(f.dst_ip) == "198.18.0.12")
    assert p.impact.newly_blocked_flows == expected > 0
    assert p.impact.flows_replayed == 40
    assert p.impact.newly_allowed_flows == 0
    assert set(p.impact.vmns_affected) == set()
    assert len(p.impact.examples) == min(10, expected)


def test_flows_an_earlier_deny_already_blocks_are_not_counted() -> None:
    ssh_denied = TMR("old", 1, Endpoint.any(), Endpoint.any(), Action.DENY, Protocol.TCP, (PortRange(22, 22),))
    earlier = replace(TMRS, tmrs=(*TMRS.tmrs, ssh_denied))
    flows = [
        make_flow(i, src_ip=A("198.18.0.11"), dst_ip=A("198.18.0.12"), dst_port=22 + 58 * (i % 2)) for i in range(6)
    ]
    (p,) = propose([scan()], tmrset=earlier, flows=flows)
    assert p.kind is ProposalKind.ADD_DENY
    assert p.impact.newly_blocked_flows == 3, "only the port-80 flows change verdict"


def test_an_anomaly_however_strong_gives_an_alert_not_a_deny() -> None:
    (p,) = propose([scan(kind=FindingKind.ANOMALY, detector="anomaly.hst", score=0.95)])
    assert p.kind is ProposalKind.ALERT
    assert "an anomaly says something is unusual" in p.summary


def test_impact_replays_only_the_context_window() -> None:
    old = [
        make_flow(
            i,
            src_ip=A("198.18.0.11"),
            dst_ip=A("198.18.0.12"),
            src_vmn=None,
            dst_vmn=None,
            first_seen_at=T0 - timedelta(hours=3),
            last_seen_at=T0 - timedelta(hours=3),
        )
        for i in range(4)
    ]
    new = [
        make_flow(
            10 + i,
            src_ip=A("198.18.0.11"),
            dst_ip=A("198.18.0.12"),
            src_vmn=None,
            dst_vmn=None,
            first_seen_at=T0 - timedelta(minutes=5),
            last_seen_at=T0 - timedelta(minutes=5),
        )
        for i in range(3)
    ]
    context = RecommendContext(now=T0, flows=(*old, *new), impact_window=timedelta(hours=1))
    (p,) = ScopedDenyRecommender().propose([scan()], TMRS, context)
    assert (p.impact.flows_replayed, p.impact.newly_blocked_flows) == (3, 3)
    (wide,) = ScopedDenyRecommender().propose([scan()], TMRS, replace(context, impact_window=timedelta(days=1)))
    assert (wide.impact.flows_replayed, wide.impact.newly_blocked_flows) == (7, 7)


def test_scans_and_brute_force_are_denied_for_a_while_and_longer_for_repeat_offenders() -> None:
    (first,) = propose([scan()])
    assert first.rule is not None
    assert first.rule.expires_at == T0 + timedelta(hours=1)
    assert first.evidence.measured["deny_duration_s"] == 3600
    assert first.evidence.measured["deny_strikes"] == 0
    assert "for 1 h (strike 1)" in first.summary

    # the first deny went into force and ran out; the offender scans again the next day
    expired = replace(first, state=ProposalState.EXPIRED)
    later = T0 + timedelta(days=1)
    (second,) = ScopedDenyRecommender().propose(
        [scan(first_seen_at=later, observed_at=later)], TMRS, RecommendContext(now=later, past_proposals=(expired,))
    )
    assert second.rule is not None
    assert second.rule.expires_at == later + timedelta(hours=4)
    assert "strike 2" in second.summary
    assert (second.id, second.rule.id) != (first.id, first.rule.id), "a strike of its own: the first is on record"

    # a rejected deny was a mistake, not a strike; a proposal never applied has stopped nothing
    for state in (ProposalState.REJECTED, ProposalState.APPROVED):
        (again,) = ScopedDenyRecommender().propose(
            [scan()], TMRS, RecommendContext(now=T0, past_proposals=(replace(first, state=state),))
        )
        assert again.id == first.id


def test_findings_that_say_a_host_is_compromised_are_denied_until_someone_acts() -> None:
    (p,) = propose([scan(kind=FindingKind.EXFILTRATION, dst_ports=(443,))])
    assert p.rule is not None
    assert p.rule.expires_at is None
    assert "deny_duration_s" not in p.evidence.measured
    (q,) = propose([scan()], settings=ScopedDenySettings(temporary_kinds=frozenset()))
    assert q.rule is not None
    assert q.rule.expires_at is None, "the setting decides which kinds are temporary"


def tunnel(servers: tuple[str, ...], shared: str, kind: FindingKind = FindingKind.DNS_TUNNEL):  # type: ignore[no-untyped-def]
    measured = (
        {"parent": "tunnel.test", SHARED_RESOLVERS: shared}
        if kind is FindingKind.DNS_TUNNEL
        else {"examples": "qxkzvbnw.top, jrtplmkq.top", SHARED_RESOLVERS: shared}
    )
    return scan(kind=kind, protocol=UDP, dst_ips=tuple(A(s) for s in servers), dst_ports=(53,), measured=measured)


def test_a_dns_tunnel_to_its_own_server_is_denied_towards_that_server() -> None:
    (p,) = propose([tunnel(("203.0.113.9",), shared="")])
    assert p.kind is ProposalKind.ADD_DENY
    assert p.rule is not None
    assert (p.rule.src, p.rule.dst, p.rule.protocol) == (
        Endpoint.vmn("vm1"),
        Endpoint.network("203.0.113.9/32"),
        Protocol.UDP,
    )
    assert [str(r) for r in p.rule.ports] == ["53"]


def test_a_dns_tunnel_or_dga_through_a_shared_resolver_is_an_alert_naming_the_domain_to_block_there() -> None:
    (p,) = propose([tunnel(("198.18.0.2",), shared="198.18.0.2")])
    assert (p.kind, p.rule) == (ProposalKind.ALERT, None), "a deny towards the resolver would cut every lookup"
    assert "shared resolver 198.18.0.2" in p.summary
    assert "block tunnel.test at the resolver" in p.summary
    (dga,) = propose([tunnel(("198.18.0.2",), shared="198.18.0.2", kind=FindingKind.DGA)])
    assert dga.kind is ProposalKind.ALERT
    assert "block qxkzvbnw.top, jrtplmkq.top at the resolver" in dga.summary


def test_only_the_servers_that_are_not_shared_resolvers_are_denied() -> None:
    (p,) = propose([tunnel(("198.18.0.2", "203.0.113.9"), shared="198.18.0.2")])
    assert p.rule is not None
    assert p.rule.dst == Endpoint.network("203.0.113.9/32")
