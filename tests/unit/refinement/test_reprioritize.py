"""ReprioritizeRecommender: flagged traffic an earlier allow lets past a deny, TMRs that never decide, placement."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.factories import T0, make_finding, make_flow
from vmshadow.domain.codec import proposal_from_json, proposal_to_json
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import Proposal, ProposalKind
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.refinement.conflicts import ConflictKind, conflicts_of
from vmshadow.refinement.recommender import RecommendContext
from vmshadow.refinement.reprioritize import ReprioritizeRecommender

A = ipaddress.ip_address
VMNS = (VMN("vm1", addresses=(A("198.18.0.11"),)), VMN("vm2", addresses=(A("198.18.0.12"),)))
NOW = T0 + timedelta(hours=1)
ALLOW_ALL = TMR("allow-all", 10, Endpoint.any(), Endpoint.any(), Action.ALLOW)
NO_SSH = TMR("no-ssh", 20, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.DENY, Protocol.TCP, (PortRange.single(22),))


def ssh(n: int, port: int = 22, protocol: int = TCP) -> list[Flow]:
    return [
        make_flow(i, id=f"f{i}", community_id=f"1:ssh{i}=", src_ip=A("198.18.0.11"), dst_ip=A("198.18.0.12"),
                  dst_port=port, protocol=protocol, src_vmn="vm1", dst_vmn="vm2",
                  first_seen_at=T0 + timedelta(seconds=i), last_seen_at=T0 + timedelta(seconds=i + 1))
        for i in range(n)
    ]  # fmt: skip


def brute(recorded: Sequence[Flow], score: float = 0.8) -> Finding:
    return make_finding(1, src_ip=A("198.18.0.11"), src_vmn="vm1", dst_ips=(A("198.18.0.12"),), dst_ports=(22,),
                        score=score, community_ids=tuple(f.community_id for f in recorded))  # fmt: skip


def propose(tmrs: Sequence[TMR], findings: Sequence[Finding] = (), recorded: Sequence[Flow] = ()) -> list[Proposal]:
    tmrset = TMRSet(tmrs=tuple(tmrs), vmns=VMNS)
    return ReprioritizeRecommender().propose(findings, tmrset, RecommendContext(now=NOW, flows=tuple(recorded)))


def test_a_deny_an_earlier_allow_lets_flagged_traffic_past_moves_ahead_of_it() -> None:
    recorded = ssh(6)
    (p,) = propose([ALLOW_ALL, NO_SSH], [brute(recorded[:4])], recorded)
    assert p.kind is ProposalKind.REPRIORITIZE
    assert p.rule is not None
    assert p.rule.id == "no-ssh"
    assert p.rule.priority == 9, "just ahead of allow-all"
    assert (p.rule.src, p.rule.dst, p.rule.ports, p.rule.action) == (
        NO_SSH.src,
        NO_SSH.dst,
        NO_SSH.ports,
        NO_SSH.action,
    )
    assert p.rule.origin is Origin.ADMIN, "moving the administrator's deny does not make it ours"
    assert p.impact.newly_blocked_flows == 6, "every recorded flow the deny matches, flagged or not"
    assert p.evidence.finding_ids == ("find-1",)
    assert set(p.evidence.community_ids) == {f.community_id for f in recorded[:4]}
    assert p.evidence.measured["flagged_flows"] == 4
    assert p.score == 0.8
    assert "allow-all" in p.summary


def test_it_moves_ahead_of_every_allow_in_the_way() -> None:
    recorded = ssh(3)
    second = TMR("vm1-out", 15, Endpoint.vmn("vm1"), Endpoint.any(), Action.ALLOW, Protocol.TCP)
    first = TMR("to-vm2", 5, Endpoint.any(), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.TCP, (PortRange(1, 1024),))
    (p,) = propose([first, second, NO_SSH], [brute(recorded)], recorded)
    assert p.rule is not None
    assert p.rule.priority == 4
    moved = TMRSet(tmrs=(first, second, p.rule), vmns=VMNS)
    assert {moved.evaluate(f, NOW).tmr_id for f in recorded} == {"no-ssh"}


def test_flows_no_finding_cites_do_not_move_a_partly_shadowed_deny() -> None:
    # the deny also covers udp/22, so allow-tcp does not shadow it entirely: only flags could move it
    tcp_only = TMR("allow-tcp", 10, Endpoint.any(), Endpoint.any(), Action.ALLOW, Protocol.TCP)
    wide = TMR("no-22", 20, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.DENY, Protocol.ANY)
    assert propose([tcp_only, wide], [], ssh(5)) == []
    recorded = ssh(5)
    assert [p.rule.id for p in propose([tcp_only, wide], [brute(recorded)], recorded) if p.rule] == ["no-22"]


def test_a_tmr_that_never_decides_moves_ahead_of_the_one_with_the_opposite_action() -> None:
    deny_vm1 = TMR("quarantine-vm1", 10, Endpoint.vmn("vm1"), Endpoint.any(), Action.DENY)
    dns = TMR("vm1-dns", 20, Endpoint.vmn("vm1"), Endpoint.network("198.18.0.2"), Action.ALLOW, Protocol.UDP,
              (PortRange.single(53),))  # fmt: skip
    (p,) = propose([deny_vm1, dns])
    assert p.rule is not None
    assert (p.rule.id, p.rule.priority, p.rule.action) == ("vm1-dns", 9, Action.ALLOW)
    assert p.evidence.finding_ids == ()
    assert p.evidence.measured["decided_first_by"] == "quarantine-vm1"
    assert p.score == ReprioritizeRecommender().settings.never_decides_score


def test_a_tmr_shadowed_by_one_with_the_same_action_or_by_an_expired_one_is_left_alone() -> None:
    same = TMR("allow-ssh", 20, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.TCP)
    assert propose([ALLOW_ALL, same]) == []
    expired = TMR("old-allow", 10, Endpoint.any(), Endpoint.any(), Action.ALLOW, expires_at=NOW - timedelta(minutes=1))
    assert propose([expired, NO_SSH], [brute(ssh(3))], ssh(3)) == []


def test_flagged_traffic_the_deny_does_not_match_moves_nothing() -> None:
    # a network never covers a VMN (it may be MAC-identified with any address): no-ssh is not shadowed by it
    from_vm1 = TMR("from-vm1", 10, Endpoint.network("198.18.0.11"), Endpoint.any(), Action.ALLOW)
    for recorded in (ssh(4, port=2222), ssh(4, protocol=UDP)):
        assert propose([from_vm1, NO_SSH], [brute(recorded)], recorded) == []
    recorded = ssh(4)
    assert [p.rule.priority for p in propose([from_vm1, NO_SSH], [brute(recorded)], recorded) if p.rule] == [9]


def test_the_same_deny_flagged_by_many_findings_is_one_proposal() -> None:
    recorded = ssh(6)
    findings = [brute(recorded[:3], 0.6), make_finding(2, community_ids=("1:ssh4=",), score=0.95)]
    (p,) = propose([ALLOW_ALL, NO_SSH], findings, recorded)
    assert p.evidence.finding_ids == ("find-1", "find-2")
    assert p.score == 0.95


@pytest.mark.parametrize("origin", list(Origin))
def test_a_moved_tmr_keeps_who_wrote_it_through_the_store_and_once_applied(origin: Origin) -> None:
    written = replace(NO_SSH, origin=origin, comment="written by someone")
    recorded = ssh(3)
    (p,) = propose([ALLOW_ALL, written], [brute(recorded)], recorded)
    assert p.rule is not None
    assert (p.rule.origin, p.rule.comment) == (origin, "written by someone")
    stored = proposal_from_json(json.loads(json.dumps(proposal_to_json(p))))
    assert stored == p, "the stored proposal's rule keeps the origin"
    # what applying it does (app/review: the TMR in force replaced by the proposal's rule)
    in_force = TMRSet(tmrs=(ALLOW_ALL, NO_SSH), vmns=VMNS).without(NO_SSH.id)
    assert stored.rule is not None
    applied = in_force.with_tmr(stored.rule)
    (now_in_force,) = [t for t in applied.tmrs if t.id == NO_SSH.id]
    assert (now_in_force.priority, now_in_force.origin) == (9, origin)
    # so a later proposal that would override it is still told it overrides an administrator's TMR
    ssh_ok = TMR("ssh-ok", 1, Endpoint.vmn("vm1"), Endpoint.any(), Action.ALLOW, Protocol.TCP, origin=Origin.PROPOSAL)
    overrides = [c.other_id for c in conflicts_of(ssh_ok, applied, NOW) if c.kind is ConflictKind.OVERRIDES_ADMIN]
    assert (NO_SSH.id in overrides) is (origin is Origin.ADMIN)


def test_a_proposal_rule_of_origin_proposal_is_stored_as_before() -> None:
    recorded = ssh(3)
    (p,) = propose([ALLOW_ALL, replace(NO_SSH, origin=Origin.PROPOSAL)], [brute(recorded)], recorded)
    rule = proposal_to_json(p)["rule"]
    assert "origin" not in rule, "proposals and export events from before keep their exact JSON"
