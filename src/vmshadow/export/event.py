"""Export events: one flat, typed record per finding, proposal, decision or outcome, ready for any SIEM format.

An event is built from a domain object (`from_finding`, `from_proposal`, `from_decision`, `from_outcome`). Its `id`
depends only on what the event says (the object's id, and for a proposal its state), so a redelivered object makes
the same event and a SIEM can drop the duplicate by `event.id`. The formatters in `ecs`, `syslog5424` and `cef` read
only this record; `data` carries the object's full plain-JSON form (`domain.codec`) for the `vmshadow.*` fields.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from vmshadow.domain import codec
from vmshadow.domain.decision import Decision
from vmshadow.domain.finding import Finding, Measured, Severity
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import PortRange
from vmshadow.domain.outcome import Outcome, Polarity
from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.domain.tmr import Endpoint, EndpointKind

JSON = dict[str, Any]


class EventKind(StrEnum):
    """What an event is about. The value is the syslog MSGID and the `vmshadow.*` object name."""

    FINDING = "finding"
    PROPOSAL = "proposal"
    DECISION = "decision"
    OUTCOME = "outcome"


@dataclass(frozen=True, slots=True)
class ExportEvent:
    """One exportable event. Addresses are strings (already validated when the domain object was built).

    `action` is the finding kind, proposal kind, decision target state or outcome kind. `rule_id` is the detector
    (findings) or recommender (proposals, outcomes) name; for decisions, the proposal's recommender when known.
    """

    id: str
    kind: EventKind
    action: str
    severity: Severity
    occurred_at: datetime
    summary: str
    subject_id: str
    rule_id: str = ""
    rule_version: str = ""
    score: float | None = None
    src_ip: str | None = None
    src_port: int | None = None
    src_vmn: str | None = None
    dst_ips: tuple[str, ...] = ()
    dst_ports: tuple[int, ...] = ()
    protocol: int | None = None
    app_protocol: str | None = None
    community_ids: tuple[str, ...] = ()
    indicator: str | None = None
    indicator_type: str | None = None
    indicator_provider: str | None = None
    indicator_confidence: int | None = None
    attack_technique: str | None = None
    data: JSON = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError(f"event {self.id}: occurred_at must be timezone-aware")

    @property
    def dst_ip(self) -> str | None:
        """The destination when there is exactly one (ECS `destination.ip`, CEF `dst`)."""
        return self.dst_ips[0] if len(self.dst_ips) == 1 else None

    @property
    def dst_port(self) -> int | None:
        return self.dst_ports[0] if len(self.dst_ports) == 1 else None


def event_to_json(e: ExportEvent) -> JSON:
    return {
        "id": e.id,
        "kind": str(e.kind),
        "action": e.action,
        "severity": str(e.severity),
        "occurred_at": e.occurred_at.isoformat(),
        "summary": e.summary,
        "subject_id": e.subject_id,
        "rule_id": e.rule_id,
        "rule_version": e.rule_version,
        "score": e.score,
        "src_ip": e.src_ip,
        "src_port": e.src_port,
        "src_vmn": e.src_vmn,
        "dst_ips": list(e.dst_ips),
        "dst_ports": list(e.dst_ports),
        "protocol": e.protocol,
        "app_protocol": e.app_protocol,
        "community_ids": list(e.community_ids),
        "indicator": e.indicator,
        "indicator_type": e.indicator_type,
        "indicator_provider": e.indicator_provider,
        "indicator_confidence": e.indicator_confidence,
        "attack_technique": e.attack_technique,
        "data": e.data,
    }


_FIELDS = frozenset(ExportEvent.__dataclass_fields__)


def event_from_json(d: JSON) -> ExportEvent:
    """Parse the form `event_to_json` writes. Unknown fields are errors."""
    unknown = set(d) - _FIELDS
    if unknown:
        raise ValueError(f"export event: unknown fields {sorted(unknown)}")
    return ExportEvent(
        id=d["id"],
        kind=EventKind(d["kind"]),
        action=d["action"],
        severity=Severity(d["severity"]),
        occurred_at=datetime.fromisoformat(d["occurred_at"]),
        summary=d.get("summary", ""),
        subject_id=d["subject_id"],
        rule_id=d.get("rule_id", ""),
        rule_version=d.get("rule_version", ""),
        score=None if d.get("score") is None else float(d["score"]),
        src_ip=d.get("src_ip"),
        src_port=d.get("src_port"),
        src_vmn=d.get("src_vmn"),
        dst_ips=tuple(d.get("dst_ips", [])),
        dst_ports=tuple(int(p) for p in d.get("dst_ports", [])),
        protocol=d.get("protocol"),
        app_protocol=d.get("app_protocol"),
        community_ids=tuple(d.get("community_ids", [])),
        indicator=d.get("indicator"),
        indicator_type=d.get("indicator_type"),
        indicator_provider=d.get("indicator_provider"),
        indicator_confidence=d.get("indicator_confidence"),
        attack_technique=d.get("attack_technique"),
        data=dict(d.get("data", {})),
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def from_finding(f: Finding) -> ExportEvent:
    m = f.measured
    confidence = m.get("confidence")
    return ExportEvent(
        id=stable_id("evt", EventKind.FINDING, f.id),
        kind=EventKind.FINDING,
        action=str(f.kind),
        severity=f.severity,
        occurred_at=f.observed_at,
        summary=f.summary,
        subject_id=f.id,
        rule_id=f.detector,
        rule_version=f.detector_version,
        score=round(f.score, 4),
        src_ip=str(f.src_ip),
        src_vmn=f.src_vmn,
        dst_ips=tuple(str(a) for a in f.dst_ips),
        dst_ports=f.dst_ports,
        protocol=f.protocol,
        app_protocol=_str_or_none(m.get("service")) or _str_or_none(m.get("application")),
        community_ids=f.community_ids,
        indicator=f.indicator,
        indicator_type=_str_or_none(m.get("indicator_type")) if f.indicator else None,
        indicator_provider=_str_or_none(m.get("indicator_source")) if f.indicator else None,
        indicator_confidence=int(confidence) if f.indicator and isinstance(confidence, int | float) else None,
        attack_technique=f.attack_technique,
        data=codec.finding_to_json(f),
    )


def _single_ip(e: Endpoint) -> str | None:
    """The address a TMR endpoint names when it is exactly one host (a /32 or /128 network)."""
    if e.kind is not EndpointKind.NETWORK:
        return None
    try:
        net = ipaddress.ip_network(e.value, strict=False)
    except ValueError:
        return None
    return str(net.network_address) if net.num_addresses == 1 else None


def _single_port(ports: tuple[PortRange, ...]) -> tuple[int, ...]:
    return tuple(p.first for p in ports if p.first == p.last)


def from_proposal(p: Proposal) -> ExportEvent:
    """A proposal as it is now: a new state, or new evidence, makes a new event (both are part of the id), so a
    SIEM that drops duplicates by event id still sees a proposal growing; a redelivery keeps its id."""
    src_ip = dst_ip = None
    src_vmn = None
    ports: tuple[int, ...] = ()
    protocol = None
    if p.rule is not None:
        src_ip, dst_ip = _single_ip(p.rule.src), _single_ip(p.rule.dst)
        src_vmn = p.rule.src.value if p.rule.src.kind is EndpointKind.VMN else None
        ports = _single_port(p.rule.ports)
        protocol = p.rule.protocol.number
    return ExportEvent(
        id=stable_id("evt", EventKind.PROPOSAL, p.id, p.state, len(p.evidence.finding_ids), p.rule),
        kind=EventKind.PROPOSAL,
        action=str(p.kind),
        severity=Severity.from_score(p.score),
        occurred_at=p.created_at,
        summary=p.summary,
        subject_id=p.id,
        rule_id=p.recommender,
        rule_version=p.recommender_version,
        score=round(p.score, 4),
        src_ip=src_ip,
        src_vmn=src_vmn,
        dst_ips=(dst_ip,) if dst_ip else (),
        dst_ports=ports,
        protocol=protocol,
        community_ids=p.evidence.community_ids,
        data=codec.proposal_to_json(p),
    )


def _decision_json(d: Decision) -> JSON:
    return {
        "id": d.id,
        "proposal_id": d.proposal_id,
        "from_state": str(d.from_state),
        "to_state": str(d.to_state),
        "actor": d.actor,
        "decided_at": d.decided_at.isoformat(),
        "reason": d.reason,
        "before": d.before,
        "after": d.after,
    }


def from_decision(d: Decision, proposal: Proposal | None = None) -> ExportEvent:
    """A decision; with its proposal the event also names the recommender and the rule's addresses."""
    base = from_proposal(proposal) if proposal is not None else None
    severity = Severity.LOW if d.to_state in (ProposalState.APPLIED, ProposalState.ROLLED_BACK) else Severity.INFO
    reason = f": {d.reason}" if d.reason else ""
    return ExportEvent(
        id=stable_id("evt", EventKind.DECISION, d.id),
        kind=EventKind.DECISION,
        action=str(d.to_state),
        severity=severity,
        occurred_at=d.decided_at,
        summary=f"{d.actor} moved proposal {d.proposal_id} from {d.from_state} to {d.to_state}{reason}",
        subject_id=d.id,
        rule_id=base.rule_id if base else "",
        rule_version=base.rule_version if base else "",
        src_ip=base.src_ip if base else None,
        src_vmn=base.src_vmn if base else None,
        dst_ips=base.dst_ips if base else (),
        dst_ports=base.dst_ports if base else (),
        protocol=base.protocol if base else None,
        data={"decision": _decision_json(d), "proposal": base.data if base else None},
    )


def from_outcome(
    *,
    outcome_id: str,
    proposal_id: str,
    recommender: str,
    action: str,
    occurred_at: datetime,
    summary: str,
    measured: Measured | None = None,
    severity: Severity = Severity.INFO,
) -> ExportEvent:
    """An outcome (hits, false-positive report, rollback, expiry) of an applied proposal.

    `from_outcome_record` builds it from a stored `Outcome`.
    """
    return ExportEvent(
        id=stable_id("evt", EventKind.OUTCOME, outcome_id),
        kind=EventKind.OUTCOME,
        action=action,
        severity=severity,
        occurred_at=occurred_at.astimezone(UTC),
        summary=summary,
        subject_id=outcome_id,
        rule_id=recommender,
        data={"id": outcome_id, "proposal_id": proposal_id, "measured": dict(measured or {})},
    )


def from_outcome_record(o: Outcome) -> ExportEvent:
    """A stored outcome. A bad outcome (a false-positive report, a rollback) is worth a look: severity low."""
    bad = o.polarity is Polarity.BAD
    detail = f" ({o.detail})" if o.detail else ""
    return from_outcome(
        outcome_id=o.id,
        proposal_id=o.proposal_id,
        recommender=o.recommender,
        action=str(o.kind),
        occurred_at=o.observed_at,
        summary=f"proposal {o.proposal_id} of {o.recommender}: {o.kind} {o.value:g} by {o.actor}{detail}",
        measured={"value": o.value, "weight": o.weight, "actor": o.actor, "detail": o.detail},
        severity=Severity.LOW if bad else Severity.INFO,
    )


SEVERITY_0_10 = {
    Severity.INFO: 1,
    Severity.LOW: 3,
    Severity.MEDIUM: 5,
    Severity.HIGH: 8,
    Severity.CRITICAL: 10,
}
"""One numeric scale for every format: CEF's 0-10 (low 0-3, medium 4-6, high 7-8, very high 9-10), ECS's
event.severity."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a sink takes: some kinds (all when empty), at or above a severity."""

    kinds: frozenset[EventKind] = frozenset()
    min_severity: Severity = Severity.INFO

    def accepts(self, e: ExportEvent) -> bool:
        return (not self.kinds or e.kind in self.kinds) and e.severity.rank >= self.min_severity.rank


def sample_event(at: datetime, *, sink: str = "") -> ExportEvent:
    """A harmless event for `vmshadow export test SINK`: documentation addresses, a unique id per call time."""
    return ExportEvent(
        id=stable_id("evt", "test", sink, at.isoformat()),
        kind=EventKind.FINDING,
        action="test",
        severity=Severity.INFO,
        occurred_at=at,
        summary=f"vmshadow export test{f' for sink {sink}' if sink else ''}",
        subject_id="test",
        rule_id="export.test",
        src_ip="192.0.2.1",
        dst_ips=("198.51.100.1",),
        dst_ports=(514,),
        protocol=6,
    )
