"""Elastic Common Schema (ECS 8.x) documents for export events. Pure: no I/O, same input, same document.

Mapping (see docs/export.md for the full table):

- `event.kind` is `alert` for findings and `event` for proposals, decisions and outcomes; `event.category` is
  `["network", "intrusion_detection"]` for findings and `["configuration"]` for the rest; `event.type` follows the
  ECS allowed values of those categories; `event.action` is the finding kind, proposal kind, decision target state
  or outcome kind; `event.severity` is the 0-10 scale shared with CEF; `event.risk_score` is score x 100.
- `source.*`, `destination.*` (only when the event names exactly one), `network.transport`, `network.iana_number`,
  `network.protocol` (application protocol, when known) and `network.community_id` (a string for one flow, an
  array for several: every ECS field may hold an array).
- `rule.id` / `rule.name` are the detector or recommender name, `rule.version` its version.
- `threat.indicator.*` for intel findings; `threat.technique.id` for an ATT&CK technique.
- `vmshadow.*` for everything ECS has no field for, including the object's full JSON form.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC
from typing import Any

from vmshadow import __version__
from vmshadow.export.event import SEVERITY_0_10, EventKind, ExportEvent

ECS_VERSION = "8.11.0"

_TRANSPORT = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
_EVENT_TYPE_PROPOSAL_NEW = ("proposed",)


def _indicator_type(kind: str | None, value: str) -> str | None:
    if kind in ("ipv4", "ipv6", "cidr"):
        try:
            version = ipaddress.ip_network(value, strict=False).version
        except ValueError:
            return None
        return f"ipv{version}-addr"
    return {"domain": "domain-name", "url": "url"}.get(kind or "")


def _confidence_label(confidence: int | None) -> str | None:
    """ECS `threat.indicator.confidence` is a keyword (None/Low/Medium/High); our 0-100 maps onto it."""
    if confidence is None:
        return None
    if confidence <= 0:
        return "None"
    if confidence < 34:
        return "Low"
    if confidence < 67:
        return "Medium"
    return "High"


def _threat(e: ExportEvent) -> dict[str, Any]:
    threat: dict[str, Any] = {}
    if e.indicator:
        indicator: dict[str, Any] = {
            "name": e.indicator,
            "description": f"{e.indicator_type or 'indicator'} {e.indicator}",
        }
        kind = _indicator_type(e.indicator_type, e.indicator)
        if kind:
            indicator["type"] = kind
        if e.indicator_type in ("ipv4", "ipv6"):
            indicator["ip"] = e.indicator
        elif e.indicator_type == "domain":
            indicator["url"] = {"domain": e.indicator}
        elif e.indicator_type == "url":
            indicator["url"] = {"full": e.indicator}
        if e.indicator_provider:
            indicator["provider"] = e.indicator_provider
        label = _confidence_label(e.indicator_confidence)
        if label:
            indicator["confidence"] = label
        threat["indicator"] = indicator
    if e.attack_technique:
        threat["framework"] = "MITRE ATT&CK"
        threat["technique"] = {"id": [e.attack_technique]}
    return threat


def _event_fields(e: ExportEvent) -> dict[str, Any]:
    if e.kind is EventKind.FINDING:
        kind, category, types = "alert", ["network", "intrusion_detection"], ["info"]
    elif e.kind is EventKind.PROPOSAL:
        kind, category = "event", ["configuration"]
        types = ["creation"] if e.data.get("state") in _EVENT_TYPE_PROPOSAL_NEW else ["change"]
    elif e.kind is EventKind.DECISION:
        kind, category, types = "event", ["configuration"], ["change"]
    else:
        kind, category, types = "event", ["configuration"], ["info"]
    fields: dict[str, Any] = {
        "id": e.id,
        "kind": kind,
        "category": category,
        "type": types,
        "action": e.action,
        "severity": SEVERITY_0_10[e.severity],
        "module": "vmshadow",
        "dataset": f"vmshadow.{e.kind}",
        "provider": "vmshadow",
    }
    if e.score is not None:
        fields["risk_score"] = round(e.score * 100, 2)
    return fields


def to_ecs(e: ExportEvent) -> dict[str, Any]:
    """The ECS document of one event, as nested dicts (the form Elasticsearch indexes)."""
    doc: dict[str, Any] = {
        "@timestamp": e.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "ecs": {"version": ECS_VERSION},
        "event": _event_fields(e),
        "message": e.summary,
        "observer": {"vendor": "vmshadow", "product": "vmshadow", "type": "ids", "version": __version__},
    }
    if e.rule_id:
        rule: dict[str, Any] = {"id": e.rule_id, "name": e.rule_id, "ruleset": f"vmshadow.{e.kind}"}
        if e.rule_version:
            rule["version"] = e.rule_version
        doc["rule"] = rule
    source: dict[str, Any] = {}
    if e.src_ip:
        source["ip"] = e.src_ip
    if e.src_port is not None:
        source["port"] = e.src_port
    if source:
        doc["source"] = source
    destination: dict[str, Any] = {}
    if e.dst_ip:
        destination["ip"] = e.dst_ip
    if e.dst_port is not None:
        destination["port"] = e.dst_port
    if destination:
        doc["destination"] = destination
    network: dict[str, Any] = {}
    if e.protocol is not None:
        network["iana_number"] = str(e.protocol)
        if e.protocol in _TRANSPORT:
            network["transport"] = _TRANSPORT[e.protocol]
    if e.app_protocol:
        network["protocol"] = e.app_protocol.lower()
    if e.community_ids:
        network["community_id"] = e.community_ids[0] if len(e.community_ids) == 1 else list(e.community_ids)
    if network:
        doc["network"] = network
    threat = _threat(e)
    if threat:
        doc["threat"] = threat
    vmshadow: dict[str, Any] = {"subject_id": e.subject_id, str(e.kind): e.data}
    if e.src_vmn:
        vmshadow["src_vmn"] = e.src_vmn
    if len(e.dst_ips) > 1:
        vmshadow["dst_ips"] = list(e.dst_ips)
    if len(e.dst_ports) > 1:
        vmshadow["dst_ports"] = list(e.dst_ports)
    if e.score is not None:
        vmshadow["score"] = e.score
    doc["vmshadow"] = vmshadow
    return doc


def to_ecs_json(e: ExportEvent) -> str:
    """One line of JSON (UTF-8 kept, keys sorted): the JSON-lines, webhook and file form."""
    return json.dumps(to_ecs(e), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
