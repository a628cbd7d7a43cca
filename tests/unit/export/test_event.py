from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import datetime

import pytest

from tests.factories import T0, at, make_alert, make_decision, make_finding, make_proposal
from vmshadow.domain.finding import FindingKind, Severity
from vmshadow.domain.net import PortRange
from vmshadow.domain.proposal import ProposalState
from vmshadow.domain.tmr import Endpoint
from vmshadow.export.event import (
    EventFilter,
    EventKind,
    event_from_json,
    event_to_json,
    from_decision,
    from_finding,
    from_outcome,
    from_proposal,
    sample_event,
)


def test_finding_event_carries_the_finding() -> None:
    f = make_finding(1)
    e = from_finding(f)
    assert e.kind is EventKind.FINDING
    assert (e.action, e.severity, e.rule_id, e.rule_version) == ("port_scan", Severity.HIGH, f.detector, "1.2.0")
    assert e.occurred_at == f.observed_at
    assert e.src_ip == "2001:db8::66"
    assert e.dst_ips == ("10.0.0.5", "2001:db8::5")
    assert e.dst_ip is None  # two destinations: no single one
    assert e.dst_port is None
    assert e.community_ids == f.community_ids
    assert e.data["id"] == f.id
    assert e.indicator_type is None


def test_event_id_is_stable_and_depends_on_content() -> None:
    assert from_finding(make_finding(1)).id == from_finding(make_finding(1)).id
    assert from_finding(make_finding(1)).id != from_finding(make_finding(2)).id
    p = make_proposal(1)
    assert from_proposal(p).id != from_proposal(replace(p, state=ProposalState.APPROVED)).id


def test_intel_finding_names_the_indicator() -> None:
    f = make_finding(
        2,
        kind=FindingKind.INTEL_MATCH,
        indicator="203.0.113.9",
        dst_ips=(ipaddress.ip_address("203.0.113.9"),),
        dst_ports=(443,),
        measured={"indicator_type": "ipv4", "indicator_source": "feed", "confidence": 80},
    )
    e = from_finding(f)
    assert (e.indicator, e.indicator_type, e.indicator_provider, e.indicator_confidence) == (
        "203.0.113.9",
        "ipv4",
        "feed",
        80,
    )
    assert (e.dst_ip, e.dst_port) == ("203.0.113.9", 443)


def test_brute_force_service_is_the_application_protocol() -> None:
    e = from_finding(make_finding(3, kind=FindingKind.BRUTE_FORCE, measured={"service": "SSH", "attempts": 3}))
    assert e.app_protocol == "SSH"


def test_proposal_event_reads_single_hosts_and_ports_from_the_rule() -> None:
    p = make_proposal(1)
    p = replace(p, rule=replace(p.rule, src=Endpoint.network("192.0.2.1/32"), dst=Endpoint.network("198.51.100.0/24")))
    e = from_proposal(p)
    assert (e.src_ip, e.dst_ips, e.dst_ports, e.protocol) == ("192.0.2.1", (), (22,), 6)
    assert e.rule_id == "deny_scanner"
    assert e.severity is Severity.HIGH  # score 0.75
    alert = from_proposal(make_alert(2))
    assert (alert.action, alert.src_ip, alert.protocol) == ("alert", None, None)


def test_proposal_rule_with_vmn_source() -> None:
    p = make_proposal(1)
    p = replace(p, rule=replace(p.rule, ports=(PortRange(1, 1024),)))
    e = from_proposal(p)
    assert (e.src_vmn, e.dst_ports) == ("web-1", ())


def test_decision_event_with_and_without_its_proposal() -> None:
    p = make_proposal(1)
    d = make_decision(1, p.id, ProposalState.APPROVED, ProposalState.APPLIED)
    e = from_decision(d, p)
    assert (e.kind, e.action, e.rule_id, e.severity) == (EventKind.DECISION, "applied", "deny_scanner", Severity.LOW)
    assert e.summary == "alice moved proposal prop-1 from approved to applied: step 1"
    assert e.data["proposal"]["id"] == p.id
    bare = from_decision(make_decision(2, "prop-x", ProposalState.PROPOSED, ProposalState.REJECTED, reason=""))
    assert (bare.rule_id, bare.data["proposal"], bare.severity) == ("", None, Severity.INFO)
    assert bare.summary.endswith("to rejected")


def test_outcome_event() -> None:
    e = from_outcome(
        outcome_id="out-1",
        proposal_id="prop-1",
        recommender="deny_scanner",
        action="expired",
        occurred_at=at(5),
        summary="expired",
        measured={"hits": 4},
    )
    assert (e.kind, e.rule_id, e.data["measured"]) == (EventKind.OUTCOME, "deny_scanner", {"hits": 4})


def test_json_round_trip_and_unknown_fields() -> None:
    e = from_finding(make_finding(1))
    assert event_from_json(event_to_json(e)) == e
    with pytest.raises(ValueError, match="unknown fields"):
        event_from_json({**event_to_json(e), "surprise": 1})


def test_naive_time_is_refused() -> None:
    e = from_finding(make_finding(1))
    with pytest.raises(ValueError, match="timezone-aware"):
        replace(e, occurred_at=datetime(2025, 1, 1))
    assert e.occurred_at.tzinfo is T0.tzinfo


def test_filter_by_kind_and_severity() -> None:
    finding = from_finding(make_finding(1))  # high
    proposal = from_proposal(make_alert(1, score=0.1))  # info
    assert EventFilter().accepts(finding)
    assert EventFilter().accepts(proposal)
    only_findings = EventFilter(kinds=frozenset({EventKind.FINDING}))
    assert only_findings.accepts(finding)
    assert not only_findings.accepts(proposal)
    assert EventFilter(min_severity=Severity.HIGH).accepts(finding)
    assert not EventFilter(min_severity=Severity.CRITICAL).accepts(finding)


def test_sample_event_for_export_test() -> None:
    e = sample_event(T0, sink="siem")
    assert e.id == sample_event(T0, sink="siem").id != sample_event(at(1), sink="siem").id
    assert "siem" in e.summary
    assert event_from_json(event_to_json(e)) == e


def test_a_proposal_gaining_evidence_is_a_new_event_and_a_redelivery_is_not() -> None:
    from dataclasses import replace

    from tests.factories import make_proposal
    from vmshadow.domain.proposal import Evidence
    from vmshadow.export.event import from_proposal

    first = make_proposal(1)
    grown = replace(first, evidence=Evidence(finding_ids=("find-1", "find-2")))
    assert from_proposal(first).id == from_proposal(replace(first)).id
    assert from_proposal(grown).id != from_proposal(first).id
