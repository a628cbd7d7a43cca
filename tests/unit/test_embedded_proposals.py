"""The service stores one proposal per growing attack: a later, wider deny takes the waiting one's place."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from tests.factories import at, make_finding, make_flow, make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.app.embedded import EmbeddedService
from vmshadow.domain.flow import TCP
from vmshadow.domain.net import Protocol
from vmshadow.domain.proposal import Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.ports.store import Store
from vmshadow.refinement.add_allow import LeastPrivilegeRecommender
from vmshadow.refinement.guardrails import GuardRails
from vmshadow.refinement.scoped_deny import ScopedDenyRecommender

SCANNER, TARGET = ipaddress.ip_address("198.18.0.11"), ipaddress.ip_address("198.18.0.12")


def scan(n: int, ports: range) -> object:
    return make_finding(
        n, src_ip=SCANNER, src_vmn="vm1", dst_ips=(TARGET,), dst_ports=tuple(ports), protocol=TCP, score=0.9,
        first_seen_at=at(0), observed_at=at(n),
    )  # fmt: skip


def service(tmp_path: Path) -> EmbeddedService:
    tmrset = TMRSet(vmns=(VMN("vm1", addresses=(SCANNER,)), VMN("vm2", addresses=(TARGET,))))
    now = [at(100)]
    return EmbeddedService(
        source=None,  # type: ignore[arg-type]  # only _flush is driven here
        store=open_store(f"sqlite:///{tmp_path / 'v.db'}"),
        tmrset=tmrset,
        detectors=[],
        recommenders=[ScopedDenyRecommender()],
        status_path=tmp_path / "status.json",
        clock=lambda: now[0],
    )


def flush(s: EmbeddedService, finding: object) -> None:
    s._pending_findings.append(finding)  # type: ignore[arg-type]
    s._flush()


def test_a_growing_scan_is_one_proposal_with_the_widest_rule_and_all_evidence(tmp_path: Path) -> None:
    s = service(tmp_path)
    flush(s, scan(1, range(20, 23)))  # caught early: three ports
    (first,) = s.store.proposals()
    assert first.rule is not None
    assert [(r.first, r.last) for r in first.rule.ports] == [(20, 22)]
    flush(s, scan(2, range(20, 120)))  # the same scan, a moment later
    (only,) = s.store.proposals()
    assert only.id == first.id
    assert only.rule is not None
    assert only.rule.ports == ()  # every port: the scan went wide
    assert only.evidence.finding_ids == ("find-1", "find-2")
    s.store.close()


def test_a_proposal_already_decided_is_not_widened(tmp_path: Path) -> None:
    s = service(tmp_path)
    flush(s, scan(1, range(20, 23)))
    (first,) = s.store.proposals()
    s.store.save_batch(proposals=[replace(first, state=ProposalState.APPROVED)])
    flush(s, scan(2, range(20, 120)))
    found = {p.id: p for p in s.store.proposals()}
    assert len(found) == 2
    assert found[first.id].state is ProposalState.APPROVED
    assert found[first.id].rule == first.rule
    (wider,) = [p for p in found.values() if p.id != first.id]
    assert (wider.kind, wider.state) == (ProposalKind.ADD_DENY, ProposalState.PROPOSED)
    s.store.close()


def test_the_scheduled_duty_proposes_least_privilege_from_recent_flows_and_stores_it(tmp_path: Path) -> None:
    broad = TMR("allow-all", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW)
    tmrset = TMRSet(tmrs=(broad,), vmns=(VMN("vm1", addresses=(SCANNER,)), VMN("vm2", addresses=(TARGET,))))
    shown: list[str] = []
    s = replace(
        service(tmp_path),
        tmrset=tmrset,
        recommenders=[ScopedDenyRecommender(), LeastPrivilegeRecommender()],
        on_proposal=lambda p: shown.append(p.id),
    )
    flows = [
        make_flow(n, src_ip=SCANNER, src_vmn="vm1", dst_ip=TARGET, dst_vmn="vm2", first_seen_at=at(50 + n))
        for n in range(5)
    ]
    s.recent.extend(flows)
    s._pending_flows.extend(flows)
    s._flush()  # flows without findings: the per-batch recommenders have nothing to say, least privilege waits
    assert s.store.proposals() == []
    proposals = s.recommend_scheduled()
    assert [p.kind for p in proposals] == [ProposalKind.ADD_ALLOW]
    assert s.store.proposals() == proposals
    assert shown == [proposals[0].id]
    rule = proposals[0].rule
    assert rule is not None
    assert (rule.src, rule.dst, [(r.first, r.last) for r in rule.ports]) == (
        Endpoint.vmn("vm1"),
        Endpoint.vmn("vm2"),
        [(443, 443)],
    )
    assert rule.priority < broad.priority  # just ahead of the broad allow it narrows
    s.store.close()


def test_a_new_proposal_reports_conflicts_with_the_pending_ones_and_leaves_them_as_they_were(tmp_path: Path) -> None:
    s = service(tmp_path)
    approved_allow = make_proposal(
        7, id="prop-allow", kind=ProposalKind.ADD_ALLOW, state=ProposalState.APPROVED, conflicts=(),
        rule=TMR("allow-vm2", 1, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"), Action.ALLOW, Protocol.TCP,
                 origin=Origin.PROPOSAL),
    )  # fmt: skip
    rejected = replace(approved_allow, id="prop-rejected", state=ProposalState.REJECTED)
    s.store.save_batch(proposals=[approved_allow, rejected])
    flush(s, scan(1, range(20, 23)))
    (deny,) = [p for p in s.store.proposals() if p.kind is ProposalKind.ADD_DENY]
    # the approved allow, once applied, comes first and lets the scan through: this deny would never decide
    assert "pending_shadowed:prop-allow" in deny.conflicts
    assert "pending_contradicts:prop-allow" in deny.conflicts
    assert not any("prop-rejected" in c for c in deny.conflicts)  # decided: not pending
    assert s.store.proposal("prop-allow") == approved_allow
    flush(s, scan(2, range(20, 23)))  # made again: the same tags, not twice
    (again,) = [p for p in s.store.proposals() if p.kind is ProposalKind.ADD_DENY]
    assert again.conflicts == deny.conflicts
    s.store.close()


def test_the_same_proposal_made_again_brings_the_impact_of_the_latest_window(tmp_path: Path) -> None:
    s = service(tmp_path)

    def scan_flows(first: int, count: int) -> list[object]:
        return [
            make_flow(n, src_ip=SCANNER, src_vmn="vm1", dst_ip=TARGET, dst_vmn="vm2", dst_port=20 + n % 3,
                      first_seen_at=at(50 + n))
            for n in range(first, first + count)
        ]  # fmt: skip

    s.recent.extend(scan_flows(0, 2))  # type: ignore[arg-type]
    flush(s, scan(1, range(20, 23)))
    (first,) = s.store.proposals()
    assert first.impact.newly_blocked_flows == 2
    s.store.save_batch(proposals=[replace(first, state=ProposalState.APPROVED)])  # decided meanwhile
    s.recent.extend(scan_flows(2, 5))  # type: ignore[arg-type]
    flush(s, scan(1, range(20, 23)))  # the same finding again: same rule, same score
    (again,) = s.store.proposals()
    assert (again.id, again.state, again.created_at) == (first.id, ProposalState.APPROVED, first.created_at)
    assert again.impact.newly_blocked_flows == 7, "the impact of the latest replay, not the first one's"
    s.store.close()


class CountingStore:
    """The store, counting the reads of every state's proposals `with_records` makes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.full_reads = 0

    def proposals(self, *, state: ProposalState | None = None, since: datetime | None = None) -> list[Proposal]:
        self.full_reads += state is None
        return self.store.proposals(state=state, since=since)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_the_store_records_are_read_every_records_every_s_and_own_proposals_count_in_between(tmp_path: Path) -> None:
    now = [at(100)]
    counting = CountingStore(open_store(f"sqlite:///{tmp_path / 'v.db'}"))
    s = replace(
        service(tmp_path),
        store=counting,  # type: ignore[arg-type]
        clock=lambda: now[0],
        guard_rails=GuardRails(max_proposals=1),  # one rule proposal per hour and recommender
    )
    flush(s, scan(1, range(20, 23)))
    assert counting.full_reads == 1
    (first,) = counting.proposals(state=ProposalState.PROPOSED)
    now[0] = at(110)  # within records_every_s: not read again, but the proposal just stored counts
    other = make_finding(2, src_ip=TARGET, src_vmn="vm2", dst_ips=(SCANNER,), dst_ports=(22, 23, 24), protocol=TCP,
                         score=0.9, first_seen_at=at(100), observed_at=at(110))  # fmt: skip
    flush(s, other)
    assert counting.full_reads == 1
    kinds = sorted(str(p.kind) for p in counting.store.proposals() if p.id != first.id)
    assert kinds == ["alert"], "the rate cap counted the proposal stored 10 s earlier"
    now[0] = at(100 + s.records_every_s)
    flush(s, scan(3, range(20, 23)))
    assert counting.full_reads == 2, "read again once records_every_s has passed"
    counting.store.close()
