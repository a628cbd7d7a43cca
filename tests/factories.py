"""Small builders for domain objects, with every field set so round-trips exercise the whole JSON form.

Scores have at most four decimals and proposal rules have origin `proposal`: that is what the codec keeps.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from vmshadow.domain import codec
from vmshadow.domain.decision import Decision
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, Flow
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import Evidence, Impact, Proposal, ProposalKind, ProposalState
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.domain.vmn import VMN, Group

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
CET = timezone(timedelta(hours=1), "CET")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_flow(n: int = 0, **overrides: Any) -> Flow:
    values: dict[str, Any] = {
        "id": f"flow-{n}",
        "community_id": f"1:flow{n}=",
        "src_ip": ipaddress.ip_address("2001:db8::10"),
        "src_port": 40000 + n,
        "dst_ip": ipaddress.ip_address("2001:db8:0:1::53"),
        "dst_port": 443,
        "protocol": TCP,
        "first_seen_at": at(n),
        "last_seen_at": at(n + 1.5),
        "src2dst_packets": 10,
        "src2dst_bytes": 1500,
        "dst2src_packets": 8,
        "dst2src_bytes": 9000,
        "src_mac": "52:54:00:aa:bb:01",
        "dst_mac": "52:54:00:aa:bb:02",
        "src_vmn": "web-1",
        "dst_vmn": None,
        "syn_packets": 1,
        "rst_packets": 0,
        "psh_packets": 3,
        "fin_packets": 2,
        "application": "TLS.Google",
        "category": "Web",
        "application_is_guessed": True,
        "sni": "example.org",
        "dns_query": "",
        "http_host": "",
        "user_agent": "curl/8 ünïcode",
        "client_fingerprint": "t13d1516h2_8daaf6152771_e5627efa2ab1",
        "server_fingerprint": "f4febc55ea12b31ae17cfb7e614afda8",
        "source": "shadow:web-1",
    }
    values.update(overrides)
    return Flow(**values)


def make_finding(n: int = 0, **overrides: Any) -> Finding:
    values: dict[str, Any] = {
        "id": f"find-{n}",
        "kind": FindingKind.PORT_SCAN,
        "severity": Severity.HIGH,
        "score": 0.8125,
        "detector": "hunting.port_scan",
        "detector_version": "1.2.0",
        "first_seen_at": at(n),
        "observed_at": at(n + 30),
        "src_ip": ipaddress.ip_address("2001:db8::66"),
        "protocol": TCP,
        "summary": "vertical scan of 120 ports",
        "src_vmn": "web-1",
        "dst_ips": (ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("2001:db8::5")),
        "dst_ports": (22, 80, 443),
        "community_ids": ("1:abc=", "1:def="),
        "measured": {"distinct_ports": 120, "rate_per_s": 41.5, "window": "60s"},
        "attack_technique": "T1046",
        "indicator": None,
    }
    values.update(overrides)
    return Finding(**values)


def make_rule(n: int = 0, **overrides: Any) -> TMR:
    values: dict[str, Any] = {
        "id": f"tmr-{n}",
        "priority": 100 + n,
        "src": Endpoint.vmn("web-1"),
        "dst": Endpoint.network("2001:db8::/32"),
        "action": Action.DENY,
        "protocol": Protocol.TCP,
        "ports": (PortRange(22, 22), PortRange(8000, 8080)),
        "expires_at": T0 + timedelta(days=7),
        "origin": Origin.PROPOSAL,
        "comment": "block the scanner",
    }
    values.update(overrides)
    return TMR(**values)


def make_proposal(n: int = 0, **overrides: Any) -> Proposal:
    values: dict[str, Any] = {
        "id": f"prop-{n}",
        "kind": ProposalKind.ADD_DENY,
        "state": ProposalState.PROPOSED,
        "recommender": "deny_scanner",
        "recommender_version": "0.3",
        "score": 0.75,
        "trust": 0.6,
        "created_at": at(n),
        "summary": "deny web-1 to 2001:db8::/32 tcp/22,8000-8080",
        "rule": make_rule(n),
        "evidence": Evidence(
            finding_ids=(f"find-{n}",), community_ids=("1:abc=",), measured={"flows": 120, "score": 0.8125}
        ),
        "impact": Impact(
            flows_replayed=1000,
            newly_blocked_flows=120,
            newly_allowed_flows=0,
            vmns_affected=("web-1",),
            examples=("1:abc=",),
        ),
        "conflicts": ("tmr-7",),
    }
    values.update(overrides)
    return Proposal(**values)


def make_alert(n: int = 0, **overrides: Any) -> Proposal:
    return make_proposal(n, kind=ProposalKind.ALERT, rule=None, **overrides)


def make_decision(
    n: int,
    proposal_id: str,
    from_state: ProposalState,
    to_state: ProposalState,
    **overrides: Any,
) -> Decision:
    values: dict[str, Any] = {
        "id": f"dec-{n}",
        "proposal_id": proposal_id,
        "from_state": from_state,
        "to_state": to_state,
        "actor": "alice",
        "decided_at": at(100 + n),
        "reason": f"step {n}",
        "before": {"id": "tmr-0", "ports": ["22"]},
        "after": {"id": "tmr-0", "ports": ["22", "2222"], "nested": {"list": [1, 2.5, None, True]}},
    }
    values.update(overrides)
    return Decision(**values)


def make_tmr_document(n: int = 0) -> dict[str, Any]:
    document = TMRSet(
        tmrs=(
            make_rule(n, origin=Origin.ADMIN),
            TMR(id="allow-dns", priority=10, src=Endpoint.group("web"), dst=Endpoint.any(), action=Action.ALLOW),
        ),
        vmns=(VMN(name="web-1", macs=("52:54:00:AA:BB:01",), addresses=(ipaddress.ip_address("2001:db8::10"),)),),
        groups=(Group(name="web", vmns=("web-1",), networks=(ipaddress.ip_network("10.0.0.0/24"),)),),
        default_action=Action.DENY,
        vmn_defaults={"web-1": Action.ALLOW},
    )
    return codec.tmrset_to_json(document)
