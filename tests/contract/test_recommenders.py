"""The recommender conformance suite: every registered recommender must pass all of it.

A new recommender inherits these tests by registering itself; nothing here names a particular recommender. Two
scenarios: a crafted TMRSet with VMNs, groups and administrator TMRs and synthetic findings and flows, and real
findings from every registered detector over public captures, against an empty TMRSet.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
from collections.abc import Sequence
from datetime import timedelta
from functools import cache
from typing import Any

import pytest

from tests.datadir import shared_data
from tests.factories import T0, make_finding, make_flow
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import detector_types
from vmshadow.domain.codec import proposal_to_json, tmrset_to_json
from vmshadow.domain.finding import Finding, FindingKind
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.net import Protocol
from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet, Verdict
from vmshadow.domain.vmn import VMN, Group
from vmshadow.flows.pcap import PcapSource
from vmshadow.refinement.conflicts import ConflictKind
from vmshadow.refinement.guardrails import GuardRails, NeverBlock
from vmshadow.refinement.recommender import RecommendContext, Recommender, recommender_types

A = ipaddress.ip_address
NAMES = sorted(recommender_types())
NOW = T0 + timedelta(hours=1)

TMRSET = TMRSet(
    tmrs=(
        TMR("allow-all", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN),
        TMR("vm3-no-udp", 50, Endpoint.vmn("vm3"), Endpoint.any(), Action.DENY, Protocol.UDP, origin=Origin.ADMIN),
        TMR("servers-ssh", 60, Endpoint.any(), Endpoint.group("servers"), Action.ALLOW, origin=Origin.PROPOSAL),
    ),
    vmns=(
        VMN("vm1", addresses=(A("198.18.0.11"),)),
        VMN("vm2", addresses=(A("198.18.0.12"),)),
        VMN("vm3", addresses=(A("198.18.0.13"),)),
    ),
    groups=(Group("servers", vmns=("vm2",), networks=(ipaddress.ip_network("198.19.0.0/24"),)),),
)


def _flows(tag: str, n: int, src: str, dst: str, port: int, protocol: int = TCP, start: float = 0) -> list[Flow]:
    return [
        make_flow(
            i,
            id=f"{tag}-{i}",
            community_id=f"1:{tag}{i}=",
            src_ip=A(src),
            dst_ip=A(dst),
            dst_port=port + i if tag.startswith("scan") else port,
            protocol=protocol,
            src_vmn=TMRSET.vmn_map.identify(None, A(src)),
            dst_vmn=TMRSET.vmn_map.identify(None, A(dst)),
            first_seen_at=T0 + timedelta(seconds=start + i),
            last_seen_at=T0 + timedelta(seconds=start + i + 1),
        )
        for i in range(n)
    ]


@cache
def synthetic() -> tuple[tuple[Finding, ...], tuple[Flow, ...]]:
    scan = _flows("scan", 30, "198.18.0.11", "198.18.0.12", 1)
    brute = _flows("brute", 12, "192.0.2.7", "198.18.0.12", 22, start=100)
    intel = _flows("intel", 3, "198.18.0.13", "203.0.113.5", 443, start=200)
    benign = (
        _flows("web1", 40, "198.18.0.11", "203.0.113.80", 443, start=1000)
        + _flows("dns2", 40, "198.18.0.12", "198.18.0.2", 53, UDP, start=1000)
        + _flows("udp3", 10, "198.18.0.13", "198.18.0.2", 53, UDP, start=1000)
    )

    def cids(flows: Sequence[Flow]) -> tuple[str, ...]:
        return tuple(f.community_id for f in flows)

    base: dict[str, Any] = {"first_seen_at": T0, "observed_at": T0 + timedelta(seconds=30), "indicator": None}
    findings = (
        make_finding(1, **base, src_ip=A("198.18.0.11"), src_vmn="vm1", dst_ips=(A("198.18.0.12"),),
                     dst_ports=tuple(range(1, 11)), score=0.7, community_ids=cids(scan[:10])),
        make_finding(2, **base, src_ip=A("198.18.0.11"), src_vmn="vm1", dst_ips=(A("198.18.0.12"),),
                     dst_ports=tuple(range(1, 31)), score=0.9, community_ids=cids(scan[10:])),
        make_finding(3, **{**base, "first_seen_at": T0 + timedelta(seconds=100)}, kind=FindingKind.BRUTE_FORCE,
                     detector="hunting.brute_force", src_ip=A("192.0.2.7"), src_vmn=None,
                     dst_ips=(A("198.18.0.12"),), dst_ports=(22,), score=0.8, community_ids=cids(brute)),
        make_finding(4, **{**base, "indicator": "203.0.113.5"}, kind=FindingKind.INTEL_MATCH, detector="intel.match",
                     src_ip=A("198.18.0.13"), src_vmn="vm3", dst_ips=(A("203.0.113.5"),), dst_ports=(443,),
                     score=0.9, community_ids=cids(intel), measured={"matched_field": "dst_ip"}),
        make_finding(5, **{**base, "indicator": "evil.example"}, kind=FindingKind.INTEL_MATCH, detector="intel.match",
                     src_ip=A("198.18.0.12"), src_vmn="vm2", dst_ips=(), dst_ports=(), protocol=UDP,
                     score=0.9, community_ids=cids(benign[40:41]), measured={"matched_field": "dns_query"}),
        make_finding(6, **{**base, "first_seen_at": T0 + timedelta(seconds=500)}, src_ip=A("198.18.0.13"),
                     src_vmn="vm3", dst_ips=(A("198.18.0.11"),), dst_ports=(80,), score=0.3, community_ids=()),
    )  # fmt: skip
    return findings, tuple(scan + brute + intel + benign)


# the same captures with the offenders and a victim known as VMNs: the blast radius then judges real traffic
PUBLIC_VMNS = TMRSet(
    vmns=(
        VMN("scanner", addresses=(A("172.16.0.8"),)),
        VMN("guesser", addresses=(A("192.168.56.1"),)),
        VMN("ssh-server", addresses=(A("192.168.56.103"),)),
    )
)


def _public(tmrset: TMRSet) -> tuple[tuple[Finding, ...], tuple[Flow, ...]]:
    data = shared_data()
    paths = [data / "ndpi/pcap/synscan.pcap", data / "zeek/traces/ssh/sshguess.pcap"]
    flows = tuple(PcapSource(paths, tmrset.vmn_map))
    detectors = [cls(None, DetectorContext()) for cls in detector_types().values()]
    findings = tuple(f for flow in flows for d in detectors for f in d.observe(flow))
    return findings, flows


@cache
def public() -> tuple[tuple[Finding, ...], tuple[Flow, ...]]:
    return _public(TMRSet())


@cache
def public_vmns() -> tuple[tuple[Finding, ...], tuple[Flow, ...]]:
    return _public(PUBLIC_VMNS)


SCENARIOS = {"crafted": (synthetic, TMRSET), "public": (public, TMRSet()), "public-vmns": (public_vmns, PUBLIC_VMNS)}


def make(name: str) -> Recommender:
    return recommender_types()[name]()


def run(
    name: str,
    findings: Sequence[Finding],
    tmrset: TMRSet,
    flows: Sequence[Flow] = (),
    **context: Any,
) -> list[Proposal]:
    return make(name).propose(findings, tmrset, RecommendContext(now=NOW, flows=flows, **context))


def scenario(key: str) -> tuple[tuple[Finding, ...], TMRSet, tuple[Flow, ...]]:
    build, tmrset = SCENARIOS[key]
    findings, flows = build()
    return findings, tmrset, flows


def as_json(proposals: Sequence[Proposal]) -> list[dict[str, Any]]:
    return [proposal_to_json(p) for p in proposals]


def rules(proposals: Sequence[Proposal]) -> list[tuple[Proposal, TMR]]:
    return [(p, p.rule) for p in proposals if p.rule is not None]


ALL = pytest.mark.parametrize("key", sorted(SCENARIOS))


def test_there_are_recommenders_to_check() -> None:
    assert "refinement.scoped_deny" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_identity_and_documentation(name: str) -> None:
    cls = recommender_types()[name]
    assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", cls.name), "names are dotted and stable"
    assert cls.name == name
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", cls.version)
    assert cls.__doc__ is not None
    assert len(cls.__doc__) > 100, "the docstring says what it proposes and when"


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_proposes_something(name: str, key: str) -> None:
    # guards the rest of the suite against passing vacuously on a recommender that never proposes a rule
    findings, tmrset, flows = scenario(key)
    assert rules(run(name, findings, tmrset, flows))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", ["public", "public-vmns"])
def test_labelled_attacks_pass_the_default_guard_rails(name: str, key: str) -> None:
    # the default blast radius must not mistake an attack that goes on after its finding for benign traffic
    findings, tmrset, flows = scenario(key)
    assert not [p.summary for p in run(name, findings, tmrset, flows) if "refused by guard-rails" in p.summary]


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_deterministic(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    assert as_json(run(name, findings, tmrset, flows)) == as_json(run(name, findings, tmrset, flows))


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_input_is_not_mutated(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    recent = tuple(run(name, findings, tmrset, flows))
    before = (copy.deepcopy([dataclasses.asdict(f) for f in findings]), [dataclasses.asdict(f) for f in flows],
              tmrset_to_json(tmrset), as_json(recent))  # fmt: skip
    run(name, findings, tmrset, flows, recent_proposals=recent)
    after = ([dataclasses.asdict(f) for f in findings], [dataclasses.asdict(f) for f in flows],
             tmrset_to_json(tmrset), as_json(recent))  # fmt: skip
    assert after == before


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_every_proposal_is_fresh_and_says_who_made_it(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    proposals = run(name, findings, tmrset, flows, trust=0.73)
    assert proposals
    cls = recommender_types()[name]
    for p in proposals:
        assert p.state is ProposalState.PROPOSED
        assert (p.recommender, p.recommender_version) == (cls.name, cls.version)
        assert p.created_at == NOW, "time comes from the context"
        assert p.trust == 0.73
        assert 0.0 <= p.score <= 1.0
        assert p.summary


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_evidence_names_only_the_given_findings_and_their_flows(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    ids = {f.id for f in findings}
    cids = {c for f in findings for c in f.community_ids}
    for p in run(name, findings, tmrset, flows):
        assert p.evidence.finding_ids, f"{p.id} has no evidence"
        assert set(p.evidence.finding_ids) <= ids
        assert set(p.evidence.community_ids) <= cids
        assert len(set(p.evidence.finding_ids)) == len(p.evidence.finding_ids)


def first_match(tmrs: Sequence[TMR], tmrset: TMRSet, flow: Flow) -> Action:
    """An independent evaluator: sort by priority (stable), first active match, else the default action."""
    for t in sorted(tmrs, key=lambda t: t.priority):
        if (t.expires_at is None or t.expires_at > NOW) and tmrset.matches(t, flow):
            return t.action
    return tmrset.default_for(flow)


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_impact_equals_an_independent_replay(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    checked = 0
    for p, rule in rules(run(name, findings, tmrset, flows)):
        after_tmrs = [*[t for t in tmrset.tmrs if t.id != rule.id], rule]
        changed = [(f, first_match(after_tmrs, tmrset, f)) for f in flows
                   if first_match(tmrset.tmrs, tmrset, f) is not first_match(after_tmrs, tmrset, f)]  # fmt: skip
        assert p.impact.flows_replayed == len(flows)
        assert p.impact.newly_blocked_flows == sum(1 for _, a in changed if a is Action.DENY)
        assert p.impact.newly_allowed_flows == sum(1 for _, a in changed if a is Action.ALLOW)
        vmns = {v for f, _ in changed for v in (f.src_vmn, f.dst_vmn) if v is not None}
        assert set(p.impact.vmns_affected) == vmns
        assert set(p.impact.examples) <= {f.community_id for f, _ in changed}
        assert len(p.impact.examples) == min(len(changed), 10)
        checked += p.impact.newly_blocked_flows + p.impact.newly_allowed_flows
    assert checked > 0, "some proposal changes some recorded flow"


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_identical_inputs_give_merged_not_repeated_proposals(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    once = run(name, findings, tmrset, flows)
    twice = run(name, [*findings, *findings], tmrset, flows)
    assert len({p.id for p in once}) == len(once)
    assert [p.id for p in twice] == [p.id for p in once]
    assert [p.evidence.finding_ids for p in twice] == [p.evidence.finding_ids for p in once]


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_alerts_carry_no_rule_and_rules_stay_within_the_tmr_model(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    expected_action = {ProposalKind.ADD_DENY: Action.DENY, ProposalKind.ADD_ALLOW: Action.ALLOW}
    for p in run(name, findings, tmrset, flows):
        if p.kind is ProposalKind.ALERT:
            assert p.rule is None
            continue
        assert p.rule is not None
        assert p.rule.action in (Action.ALLOW, Action.DENY)
        assert p.rule.action is expected_action.get(p.kind, p.rule.action)
        assert p.rule.origin is Origin.PROPOSAL, "only administrators write `admin` TMRs"
        if p.kind is ProposalKind.TEMPORARY_EXCEPTION:
            assert p.rule.expires_at is not None
        tmrset.without(p.rule.id).with_tmr(p.rule)  # names only VMNs and groups the TMRSet knows


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_conflicts_name_existing_tmrs(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    ids = {t.id for t in tmrset.tmrs}
    kinds = {str(k) for k in ConflictKind}
    for p in run(name, findings, tmrset, flows):
        for conflict in p.conflicts:
            kind, _, other = conflict.partition(":")
            assert kind in kinds
            assert other in ids


def test_the_crafted_scenario_has_conflicts_to_check() -> None:
    findings, tmrset, flows = scenario("crafted")
    assert any(p.conflicts for name in NAMES for p in run(name, findings, tmrset, flows))


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_works_with_an_empty_tmrset_and_without_recorded_flows(name: str, key: str) -> None:
    findings, _, flows = scenario(key)
    for tmrset, recorded in ((TMRSet(), flows), (TMRSet(), ()), (scenario(key)[1], ())):
        proposals = run(name, findings, tmrset, recorded)
        assert proposals
        assert all(p.impact.flows_replayed == len(recorded) for p, _ in rules(proposals))
        assert all(p.evidence.finding_ids for p in proposals)
    assert run(name, [], TMRSet(), ()) == []


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_guard_rails_are_obeyed(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    everything = GuardRails(never_block=(NeverBlock.of("0.0.0.0/0"), NeverBlock.of("::/0")))
    refused = run(name, findings, tmrset, flows, guard_rails=everything)
    assert not [r for _, r in rules(refused) if r.action is Action.DENY]
    assert any("never_block" in p.summary for p in refused)
    capped = run(name, findings, tmrset, flows, guard_rails=GuardRails(max_proposals=0))
    assert rules(capped) == []
    assert len(capped) == len(run(name, findings, tmrset, flows)), "refused proposals become alerts"


def test_the_independent_evaluator_agrees_with_the_tmrset() -> None:
    # guards the impact test: if the oracle were wrong, the comparison above would mean nothing
    _, tmrset, flows = scenario("crafted")
    verdicts = [tmrset.evaluate(f, NOW) for f in flows]
    assert [first_match(tmrset.tmrs, tmrset, f) for f in flows] == [v.action for v in verdicts]
    assert {v.tmr_id for v in verdicts} >= {"allow-all", "vm3-no-udp"}
    assert isinstance(verdicts[0], Verdict)
