"""The recommender conformance suite: every registered recommender must pass all of it.

A new recommender inherits these tests by registering itself; nothing here names a particular recommender. It
reads what each one says it proposes from (`Recommender.needs`) and what it makes (`Recommender.kinds`). Three
scenarios: a crafted TMRSet with VMNs, groups and administrator TMRs, synthetic findings and flows, and an
administrator's false-positive report (built so that every proposal kind has something to do: a scan an earlier
allow lets through a deny, VMNs under a broad allow and a default deny, a reported deny); and real findings from
every registered detector over public captures, against an empty TMRSet and against one naming the hosts as VMNs
(those exercise denies only).
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
from vmshadow.domain.outcome import Outcome, OutcomeKind
from vmshadow.domain.proposal import Evidence, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet, Verdict
from vmshadow.domain.vmn import VMN, Group
from vmshadow.flows.pcap import PcapSource
from vmshadow.refinement.conflicts import ConflictKind
from vmshadow.refinement.guardrails import GuardRails, NeverBlock
from vmshadow.refinement.recommender import Input, RecommendContext, Recommender, ReportedOutcome, recommender_types

A = ipaddress.ip_address
NAMES = sorted(recommender_types())
NOW = T0 + timedelta(hours=1)

WEB_DENY = TMR("deny-web", 40, Endpoint.vmn("vm1"), Endpoint.network("203.0.113.80"), Action.DENY, Protocol.TCP,
               origin=Origin.PROPOSAL)  # fmt: skip
TMRSET = TMRSet(
    tmrs=(
        # broad (any destination), and not for vm4's network: vm4's flows fall to its default deny
        TMR("allow-all", 100, Endpoint.network("198.18.0.0/24"), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN),
        TMR("vm3-no-udp", 50, Endpoint.vmn("vm3"), Endpoint.any(), Action.DENY, Protocol.UDP, origin=Origin.ADMIN),
        TMR("servers-ssh", 60, Endpoint.any(), Endpoint.group("servers"), Action.ALLOW, origin=Origin.PROPOSAL),
        # never decides: servers-ssh lets vm1's scan of vm2 through first
        TMR("vm1-no-scan", 70, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.DENY, Protocol.TCP,
            origin=Origin.ADMIN),
        WEB_DENY,  # applied from a proposal an administrator then reported as a false positive (REPORTS)
    ),
    vmns=(
        VMN("vm1", addresses=(A("198.18.0.11"),)),
        VMN("vm2", addresses=(A("198.18.0.12"),)),
        VMN("vm3", addresses=(A("198.18.0.13"),)),
        VMN("vm4", addresses=(A("198.18.1.14"),)),
    ),
    groups=(
        Group("servers", vmns=("vm2",), networks=(ipaddress.ip_network("198.19.0.0/24"),)),
        Group("resolver", networks=(ipaddress.ip_network("198.18.0.2/32"),)),
    ),
    vmn_defaults={"vm4": Action.DENY},
)  # fmt: skip
REPORTED = Proposal(
    id="prop-web", kind=ProposalKind.ADD_DENY, state=ProposalState.APPLIED, recommender="refinement.scoped_deny",
    recommender_version="1.0", score=0.8, trust=0.5, created_at=T0, summary="deny vm1 -> 203.0.113.80 tcp",
    rule=WEB_DENY, evidence=Evidence(finding_ids=("find-web",), community_ids=("1:web10=",)),
)  # fmt: skip
REPORTS = (
    ReportedOutcome(
        Outcome("out-fp", REPORTED.id, REPORTED.recommender, OutcomeKind.FALSE_POSITIVE, T0 + timedelta(minutes=30),
                weight=2.0, actor="alice", detail="the nightly backup"),
        REPORTED,
    ),
)  # fmt: skip


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
        + _flows("dns4", 20, "198.18.1.14", "198.18.0.2", 53, UDP, start=1000)
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


@dataclasses.dataclass(frozen=True)
class Scenario:
    build: Any  # () -> (findings, flows)
    tmrset: TMRSet
    extras: dict[str, Any]  # more of the context (reports)
    exercises: frozenset[ProposalKind]  # kinds a recommender making them must propose here


SCENARIOS = {
    "crafted": Scenario(synthetic, TMRSET, {"reports": REPORTS}, frozenset(ProposalKind) - {ProposalKind.ALERT}),
    "public": Scenario(public, TMRSet(), {}, frozenset({ProposalKind.ADD_DENY})),
    "public-vmns": Scenario(public_vmns, PUBLIC_VMNS, {}, frozenset({ProposalKind.ADD_DENY})),
}


def make(name: str) -> Recommender:
    return recommender_types()[name]()


def available(findings: Sequence[Finding], tmrset: TMRSet, flows: Sequence[Flow], **context: Any) -> set[Input]:
    """The inputs a run gets, in `Recommender.needs` terms."""
    given = {
        Input.FINDINGS: bool(findings), Input.FLOWS: bool(flows), Input.TMRS: bool(tmrset.tmrs),
        Input.VMNS: bool(tmrset.vmns), Input.REPORTS: bool(context.get("reports")),
    }  # fmt: skip
    return {i for i, present in given.items() if present}


def extras(key: str) -> dict[str, Any]:
    return SCENARIOS[key].extras


def exercised(name: str, key: str) -> bool:
    """The scenario was built to give this recommender something to propose."""
    return bool(recommender_types()[name].kinds & SCENARIOS[key].exercises)


def reported_evidence(context: dict[str, Any]) -> tuple[set[str], set[str]]:
    reports: Sequence[ReportedOutcome] = context.get("reports", ())
    return (
        {i for r in reports for i in r.proposal.evidence.finding_ids},
        {c for r in reports for c in r.proposal.evidence.community_ids},
    )


def in_window(flows: Sequence[Flow]) -> list[Flow]:
    """The flows the impact replay covers by default: those seen in the 24 h up to NOW, or up to the newest flow
    when that is earlier (an old capture). Written from the definition, not from `refinement.impact`."""
    if not flows:
        return []
    end = min(NOW, max(f.last_seen_at for f in flows))
    return [f for f in flows if f.last_seen_at >= end - timedelta(hours=24)]


def as_json(proposals: Sequence[Proposal]) -> list[dict[str, Any]]:
    return [proposal_to_json(p) for p in proposals]


def rules(proposals: Sequence[Proposal]) -> list[tuple[Proposal, TMR]]:
    return [(p, p.rule) for p in proposals if p.rule is not None]


def run(
    name: str,
    findings: Sequence[Finding],
    tmrset: TMRSet,
    flows: Sequence[Flow] = (),
    **context: Any,
) -> list[Proposal]:
    return make(name).propose(findings, tmrset, RecommendContext(now=NOW, flows=flows, **context))


def scenario(key: str) -> tuple[tuple[Finding, ...], TMRSet, tuple[Flow, ...]]:
    findings, flows = SCENARIOS[key].build()
    return findings, SCENARIOS[key].tmrset, flows


def run_scenario(name: str, key: str, **context: Any) -> list[Proposal]:
    findings, tmrset, flows = scenario(key)
    return run(name, findings, tmrset, flows, **{**extras(key), **context})


ALL = pytest.mark.parametrize("key", sorted(SCENARIOS))


def test_there_are_recommenders_to_check() -> None:
    assert {"refinement.scoped_deny", "refinement.least_privilege", "refinement.reprioritize",
            "refinement.temporary_exception"} <= set(NAMES)  # fmt: skip
    made = set().union(*(cls.kinds for cls in recommender_types().values()))
    assert made == set(ProposalKind), "every proposal kind has a recommender"


@pytest.mark.parametrize("name", NAMES)
def test_identity_and_documentation(name: str) -> None:
    cls = recommender_types()[name]
    assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", cls.name), "names are dotted and stable"
    assert cls.name == name
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", cls.version)
    assert cls.__doc__ is not None
    assert len(cls.__doc__) > 100, "the docstring says what it proposes and when"
    assert cls.needs
    assert cls.needs <= set(Input)
    assert cls.kinds
    assert cls.kinds <= set(ProposalKind)
    assert isinstance(cls.per_batch, bool)


@pytest.mark.parametrize(
    ("name", "key"), [(n, k) for n in NAMES for k in sorted(SCENARIOS) if exercised(n, k)]
)  # only the scenarios built to give each recommender something to propose
def test_proposes_something(name: str, key: str) -> None:
    # guards the rest of the suite against passing vacuously on a recommender that never proposes a rule
    assert rules(run_scenario(name, key))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", ["public", "public-vmns"])
def test_labelled_attacks_pass_the_default_guard_rails(name: str, key: str) -> None:
    # the default blast radius must not mistake an attack that goes on after its finding for benign traffic
    assert not [p.summary for p in run_scenario(name, key) if "refused by guard-rails" in p.summary]


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_deterministic(name: str, key: str) -> None:
    assert as_json(run_scenario(name, key)) == as_json(run_scenario(name, key))


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_input_is_not_mutated(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    recent = tuple(run_scenario(name, key))
    reports = [(dataclasses.asdict(r.outcome), proposal_to_json(r.proposal)) for r in extras(key).get("reports", ())]
    before = (copy.deepcopy([dataclasses.asdict(f) for f in findings]), [dataclasses.asdict(f) for f in flows],
              tmrset_to_json(tmrset), as_json(recent), copy.deepcopy(reports))  # fmt: skip
    run_scenario(name, key, recent_proposals=recent)
    reports = [(dataclasses.asdict(r.outcome), proposal_to_json(r.proposal)) for r in extras(key).get("reports", ())]
    after = ([dataclasses.asdict(f) for f in findings], [dataclasses.asdict(f) for f in flows],
             tmrset_to_json(tmrset), as_json(recent), reports)  # fmt: skip
    assert after == before


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_every_proposal_is_fresh_and_says_who_made_it(name: str, key: str) -> None:
    proposals = run_scenario(name, key, trust=0.73)
    assert proposals or not exercised(name, key)
    cls = recommender_types()[name]
    for p in proposals:
        assert p.state is ProposalState.PROPOSED
        assert (p.recommender, p.recommender_version) == (cls.name, cls.version)
        assert p.kind in cls.kinds, "only the kinds it declares"
        assert p.created_at == NOW, "time comes from the context"
        assert p.trust == 0.73
        assert 0.0 <= p.score <= 1.0
        assert p.summary


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_low_trust_gives_alerts_only(name: str, key: str) -> None:
    distrusted = run_scenario(name, key, trust=0.01)
    assert rules(distrusted) == []
    assert len(distrusted) == len(run_scenario(name, key)), "each withheld rule is still shown, as an alert"


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_evidence_names_only_the_given_findings_and_their_flows(name: str, key: str) -> None:
    findings, _, flows = scenario(key)
    reported_ids, reported_cids = reported_evidence(extras(key))
    ids = {f.id for f in findings} | reported_ids
    cids = {c for f in findings for c in f.community_ids} | reported_cids
    if Input.FLOWS in recommender_types()[name].needs:
        cids |= {f.community_id for f in flows}  # it proposes from recorded flows: those are its evidence
    for p in run_scenario(name, key):
        assert p.evidence.finding_ids or p.evidence.community_ids or p.evidence.measured, f"{p.id} has no evidence"
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
    _, tmrset, flows = scenario(key)
    replayed = in_window(flows)
    checked = 0
    for p, rule in rules(run_scenario(name, key)):
        after_tmrs = [*[t for t in tmrset.tmrs if t.id != rule.id], rule]
        changed = [(f, first_match(after_tmrs, tmrset, f)) for f in replayed
                   if first_match(tmrset.tmrs, tmrset, f) is not first_match(after_tmrs, tmrset, f)]  # fmt: skip
        assert p.impact.flows_replayed == len(replayed)
        assert p.impact.newly_blocked_flows == sum(1 for _, a in changed if a is Action.DENY)
        assert p.impact.newly_allowed_flows == sum(1 for _, a in changed if a is Action.ALLOW)
        vmns = {v for f, _ in changed for v in (f.src_vmn, f.dst_vmn) if v is not None}
        assert set(p.impact.vmns_affected) == vmns
        assert set(p.impact.examples) <= {f.community_id for f, _ in changed}
        assert len(p.impact.examples) == min(len(changed), 10)
        per_vmn = {v.vmn: v for v in p.impact.per_vmn}
        assert set(per_vmn) == vmns
        for vmn, counted in per_vmn.items():
            own = [(f, a) for f, a in changed if vmn in (f.src_vmn, f.dst_vmn)]
            assert counted.newly_blocked_flows == sum(1 for _, a in own if a is Action.DENY)
            assert counted.newly_allowed_flows == sum(1 for _, a in own if a is Action.ALLOW)
            assert set(counted.examples) <= {f.community_id for f, _ in own}
            assert len(counted.examples) == min(len(own), 10)
        checked += p.impact.newly_blocked_flows + p.impact.newly_allowed_flows
    assert checked > 0 or not exercised(name, key), "some proposal changes some recorded flow"


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_identical_inputs_give_merged_not_repeated_proposals(name: str, key: str) -> None:
    findings, tmrset, flows = scenario(key)
    reports = tuple(extras(key).get("reports", ()))
    once = run_scenario(name, key)
    twice = run(name, [*findings, *findings], tmrset, flows, reports=reports * 2)
    assert len({p.id for p in once}) == len(once)
    assert [p.id for p in twice] == [p.id for p in once]
    assert [p.evidence.finding_ids for p in twice] == [p.evidence.finding_ids for p in once]


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_alerts_carry_no_rule_and_rules_stay_within_the_tmr_model(name: str, key: str) -> None:
    _, tmrset, _ = scenario(key)
    expected_action = {ProposalKind.ADD_DENY: Action.DENY, ProposalKind.ADD_ALLOW: Action.ALLOW,
                       ProposalKind.TEMPORARY_EXCEPTION: Action.ALLOW}  # fmt: skip
    existing = {t.id: t for t in tmrset.tmrs}
    for p in run_scenario(name, key):
        if p.kind is ProposalKind.ALERT:
            assert p.rule is None
            continue
        assert p.rule is not None
        assert p.rule.action in (Action.ALLOW, Action.DENY)
        assert p.rule.action is expected_action.get(p.kind, p.rule.action)
        if p.kind is not ProposalKind.REPRIORITIZE:  # a moved TMR keeps its origin (checked below)
            assert p.rule.origin is Origin.PROPOSAL, "only administrators write `admin` TMRs"
        if p.kind is ProposalKind.TEMPORARY_EXCEPTION:
            assert p.rule.expires_at is not None
            assert p.rule.expires_at > NOW, "an exception that has already expired changes nothing"
        if p.kind is ProposalKind.REPRIORITIZE:
            old = existing.get(p.rule.id)
            assert old is not None, "a priority change is about a TMR of the set"
            assert p.rule.priority != old.priority
            assert dataclasses.replace(p.rule, priority=old.priority) == old, "only the priority, not who wrote it"
        else:
            assert p.rule.id not in existing, "a new rule does not silently replace a TMR"
        tmrset.without(p.rule.id).with_tmr(p.rule)  # names only VMNs and groups the TMRSet knows


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_conflicts_name_existing_tmrs(name: str, key: str) -> None:
    _, tmrset, _ = scenario(key)
    ids = {t.id for t in tmrset.tmrs}
    kinds = {str(k) for k in ConflictKind}
    for p in run_scenario(name, key):
        for conflict in p.conflicts:
            kind, _, other = conflict.partition(":")
            assert kind in kinds
            assert not kind.startswith("pending_"), "a recommender sees no pending proposals (the app adds those)"
            assert other in ids


def test_the_crafted_scenario_has_conflicts_to_check() -> None:
    assert any(p.conflicts for name in NAMES for p in run_scenario(name, "crafted"))


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_works_with_an_empty_tmrset_and_without_recorded_flows(name: str, key: str) -> None:
    findings, own, flows = scenario(key)
    needs = recommender_types()[name].needs
    for tmrset, recorded in ((TMRSet(), flows), (TMRSet(), ()), (own, ())):
        context = extras(key)
        proposals = run(name, findings, tmrset, recorded, **context)
        given = available(findings, tmrset, recorded, **context)
        if not needs <= given:
            assert proposals == [], f"without {sorted(needs - given)} there is nothing to propose from"
        elif needs <= {Input.FINDINGS, Input.FLOWS}:
            assert proposals, "findings alone are enough"
        assert all(p.impact.flows_replayed == len(in_window(recorded)) for p, _ in rules(proposals))
        assert all(p.evidence.finding_ids or p.evidence.community_ids or p.evidence.measured for p in proposals)
    assert run(name, [], TMRSet(), ()) == []


@pytest.mark.parametrize("name", NAMES)
@ALL
def test_guard_rails_are_obeyed(name: str, key: str) -> None:
    unguarded = run_scenario(name, key)
    everything = GuardRails(never_block=(NeverBlock.of("0.0.0.0/0"), NeverBlock.of("::/0")))
    refused = run_scenario(name, key, guard_rails=everything)
    assert not [r for _, r in rules(refused) if r.action is Action.DENY]
    if [r for _, r in rules(unguarded) if r.action is Action.DENY]:
        assert any("never_block" in p.summary for p in refused)
    capped = run_scenario(name, key, guard_rails=GuardRails(max_proposals=0))
    assert rules(capped) == []
    assert len(capped) == len(unguarded), "refused proposals become alerts"


def test_the_independent_evaluator_agrees_with_the_tmrset() -> None:
    # guards the impact test: if the oracle were wrong, the comparison above would mean nothing
    _, tmrset, flows = scenario("crafted")
    verdicts = [tmrset.evaluate(f, NOW) for f in flows]
    assert [first_match(tmrset.tmrs, tmrset, f) for f in flows] == [v.action for v in verdicts]
    assert {v.tmr_id for v in verdicts} >= {"allow-all", "vm3-no-udp", "deny-web", None}
    assert isinstance(verdicts[0], Verdict)


def test_the_window_leaves_out_old_flows() -> None:
    # guards `in_window`: the public scenario spans years (two captures), so its replay is the newest day only
    _, _, flows = scenario("public")
    assert 0 < len(in_window(flows)) < len(flows)
    assert len(in_window(scenario("crafted")[2])) == len(scenario("crafted")[2])
