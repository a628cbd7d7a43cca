"""Plain-JSON forms of domain objects: the spelling of the CLI's --json, the API and the store's JSON columns."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.proposal import Evidence, Impact, Proposal, ProposalKind, ProposalState, VMNImpact
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, Origin, TMRSet
from vmshadow.domain.vmn import VMN, Group

JSON = dict[str, Any]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _endpoint(e: Endpoint) -> str:
    return "any" if e.kind is EndpointKind.ANY else f"{e.kind}:{e.value}"


def _parse_endpoint(text: str) -> Endpoint:
    if text == "any":
        return Endpoint.any()
    kind, _, value = text.partition(":")
    return Endpoint(EndpointKind(kind), value)


def tmr_to_json(t: TMR) -> JSON:
    return {
        "id": t.id,
        "priority": t.priority,
        "src": _endpoint(t.src),
        "dst": _endpoint(t.dst),
        "protocol": str(t.protocol),
        "ports": [str(p) for p in t.ports],
        "action": str(t.action),
        "expires_at": _time(t.expires_at),
        "origin": str(t.origin),
        "comment": t.comment,
    }


def tmr_from_json(d: JSON) -> TMR:
    ports = []
    for p in d.get("ports", []):
        first, _, last = str(p).partition("-")
        ports.append(PortRange(int(first), int(last or first)))
    return TMR(
        id=d["id"],
        priority=int(d["priority"]),
        src=_parse_endpoint(d["src"]),
        dst=_parse_endpoint(d["dst"]),
        protocol=Protocol(d["protocol"]),
        ports=tuple(ports),
        action=Action(d["action"]),
        expires_at=_parse_time(d.get("expires_at")),
        origin=Origin(d.get("origin", "admin")),
        comment=d.get("comment", ""),
    )


def finding_to_json(f: Finding) -> JSON:
    return {
        "id": f.id,
        "kind": str(f.kind),
        "severity": str(f.severity),
        "score": round(f.score, 4),
        "detector": f.detector,
        "detector_version": f.detector_version,
        "first_seen_at": _time(f.first_seen_at),
        "observed_at": _time(f.observed_at),
        "src_ip": str(f.src_ip),
        "src_vmn": f.src_vmn,
        "protocol": f.protocol,
        "dst_ips": [str(a) for a in f.dst_ips],
        "dst_ports": list(f.dst_ports),
        "community_ids": list(f.community_ids),
        "measured": dict(f.measured),
        "attack_technique": f.attack_technique,
        "indicator": f.indicator,
        "summary": f.summary,
    }


def finding_from_json(d: JSON) -> Finding:
    first_seen_at = _parse_time(d["first_seen_at"])
    observed_at = _parse_time(d["observed_at"])
    assert first_seen_at is not None
    assert observed_at is not None
    return Finding(
        id=d["id"],
        kind=FindingKind(d["kind"]),
        severity=Severity(d["severity"]),
        score=float(d["score"]),
        detector=d["detector"],
        detector_version=d["detector_version"],
        first_seen_at=first_seen_at,
        observed_at=observed_at,
        src_ip=ipaddress.ip_address(d["src_ip"]),
        src_vmn=d.get("src_vmn"),
        protocol=int(d["protocol"]),
        dst_ips=tuple(ipaddress.ip_address(a) for a in d.get("dst_ips", [])),
        dst_ports=tuple(int(p) for p in d.get("dst_ports", [])),
        community_ids=tuple(d.get("community_ids", [])),
        measured=dict(d.get("measured", {})),
        attack_technique=d.get("attack_technique"),
        indicator=d.get("indicator"),
        summary=d.get("summary", ""),
    )


def proposal_to_json(p: Proposal) -> JSON:
    rule = None
    if p.rule is not None:
        rule = {
            k: v
            for k, v in tmr_to_json(p.rule).items()
            if k in ("id", "src", "dst", "protocol", "ports", "action", "priority", "expires_at", "comment")
        }
        if p.rule.origin is not Origin.PROPOSAL:  # a reprioritize keeps who wrote the TMR it moves
            rule["origin"] = str(p.rule.origin)
    return {
        "id": p.id,
        "kind": str(p.kind),
        "state": str(p.state),
        "rule": rule,
        "recommender": p.recommender,
        "recommender_version": p.recommender_version,
        "score": round(p.score, 4),
        "trust": round(p.trust, 4),
        "created_at": _time(p.created_at),
        "summary": p.summary,
        "evidence": {
            "finding_ids": list(p.evidence.finding_ids),
            "community_ids": list(p.evidence.community_ids),
            "measured": dict(p.evidence.measured),
        },
        "impact": {
            "flows_replayed": p.impact.flows_replayed,
            "newly_blocked_flows": p.impact.newly_blocked_flows,
            "newly_allowed_flows": p.impact.newly_allowed_flows,
            "vmns_affected": list(p.impact.vmns_affected),
            "examples": list(p.impact.examples),
            **_impact_extras(p.impact),
        },
        "conflicts": list(p.conflicts),
    }


def _impact_extras(i: Impact) -> JSON:
    """The window and per-VMN parts of an impact, only when it has them: proposals made before they existed
    (and the golden export events) keep their exact JSON."""
    extras: JSON = {}
    if i.since is not None:
        extras["since"] = _time(i.since)
    if i.per_vmn:
        extras["per_vmn"] = [
            {
                "vmn": v.vmn,
                "newly_blocked_flows": v.newly_blocked_flows,
                "newly_allowed_flows": v.newly_allowed_flows,
                "examples": list(v.examples),
            }
            for v in i.per_vmn
        ]
    return extras


def _vmn_impact_from_json(d: JSON) -> VMNImpact:
    return VMNImpact(
        vmn=d["vmn"],
        newly_blocked_flows=int(d.get("newly_blocked_flows", 0)),
        newly_allowed_flows=int(d.get("newly_allowed_flows", 0)),
        examples=tuple(d.get("examples", [])),
    )


def proposal_from_json(d: JSON) -> Proposal:
    rule = None
    if d.get("rule") is not None:
        rule = tmr_from_json({"origin": "proposal", **d["rule"]})
    created_at = _parse_time(d["created_at"])
    assert created_at is not None
    ev, im = d.get("evidence", {}), d.get("impact", {})
    return Proposal(
        id=d["id"],
        kind=ProposalKind(d["kind"]),
        state=ProposalState(d["state"]),
        recommender=d["recommender"],
        recommender_version=d.get("recommender_version", ""),
        score=float(d["score"]),
        trust=float(d.get("trust", 0.5)),
        created_at=created_at,
        summary=d.get("summary", ""),
        rule=rule,
        evidence=Evidence(
            finding_ids=tuple(ev.get("finding_ids", [])),
            community_ids=tuple(ev.get("community_ids", [])),
            measured=dict(ev.get("measured", {})),
        ),
        impact=Impact(
            flows_replayed=int(im.get("flows_replayed", 0)),
            newly_blocked_flows=int(im.get("newly_blocked_flows", 0)),
            newly_allowed_flows=int(im.get("newly_allowed_flows", 0)),
            vmns_affected=tuple(im.get("vmns_affected", [])),
            examples=tuple(im.get("examples", [])),
            since=_parse_time(im.get("since")),
            per_vmn=tuple(_vmn_impact_from_json(v) for v in im.get("per_vmn", [])),
        ),
        conflicts=tuple(d.get("conflicts", [])),
    )


def flow_to_json(f: Flow) -> JSON:
    out: JSON = {}
    for name in f.__dataclass_fields__:
        value = getattr(f, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            value = str(value)
        out[name] = value
    return out


def flow_from_json(d: JSON) -> Flow:
    values = dict(d)
    for name in ("src_ip", "dst_ip"):
        values[name] = ipaddress.ip_address(values[name])
    for name in ("first_seen_at", "last_seen_at"):
        values[name] = datetime.fromisoformat(values[name])
    return Flow(**values)


def tmrset_to_json(s: TMRSet) -> JSON:
    return {
        "vmns": [
            {
                "name": v.name,
                "macs": list(v.macs),
                "addresses": [str(a) for a in v.addresses],
                "interfaces": list(v.interfaces),
            }
            for v in s.vmns
        ],
        "groups": [{"name": g.name, "vmns": list(g.vmns), "networks": [str(n) for n in g.networks]} for g in s.groups],
        "default_action": str(s.default_action),
        "vmn_defaults": {k: str(v) for k, v in s.vmn_defaults.items()},
        "tmrs": [tmr_to_json(t) for t in s.tmrs],
    }


def tmrset_from_json(d: JSON) -> TMRSet:
    return TMRSet(
        tmrs=tuple(tmr_from_json(t) for t in d.get("tmrs", [])),
        vmns=tuple(
            VMN(
                name=v["name"],
                macs=tuple(v.get("macs", [])),
                addresses=tuple(ipaddress.ip_address(a) for a in v.get("addresses", [])),
                interfaces=tuple(v.get("interfaces", [])),
            )
            for v in d.get("vmns", [])
        ),
        groups=tuple(
            Group(
                name=g["name"],
                vmns=tuple(g.get("vmns", [])),
                networks=tuple(ipaddress.ip_network(n) for n in g.get("networks", [])),
            )
            for g in d.get("groups", [])
        ),
        default_action=Action(d.get("default_action", "allow")),
        vmn_defaults={k: Action(v) for k, v in d.get("vmn_defaults", {}).items()},
    )


def indicator_to_json(i: Indicator) -> JSON:
    return {
        "type": str(i.type),
        "value": i.value,
        "source": i.source,
        "confidence": i.confidence,
        "valid_from": _time(i.valid_from),
        "valid_until": _time(i.valid_until),
        "labels": list(i.labels),
        "kill_chain_phases": list(i.kill_chain_phases),
        "revoked": i.revoked,
        "external_id": i.external_id,
    }


def indicator_from_json(d: JSON) -> Indicator:
    return Indicator(
        type=IndicatorType(d["type"]),
        value=d["value"],
        source=d["source"],
        confidence=int(d.get("confidence", 50)),
        valid_from=_parse_time(d.get("valid_from")),
        valid_until=_parse_time(d.get("valid_until")),
        labels=tuple(d.get("labels", [])),
        kill_chain_phases=tuple(d.get("kill_chain_phases", [])),
        revoked=bool(d.get("revoked", False)),
        external_id=d.get("external_id"),
    )


def indicator_id(i: Indicator) -> str:
    """One stored row per (type, value, source): a feed re-sending an indicator updates it."""
    return stable_id("ind", i.type, i.value, i.source)
