"""JSON forms round-trip exactly: they are the API, CLI and store spelling."""

from __future__ import annotations

import json

from tests.factories import make_alert, make_finding, make_flow, make_proposal, make_rule, make_tmr_document
from vmshadow.domain import codec


def _through_text(data: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(data))  # type: ignore[no-any-return]


def test_flow_round_trip() -> None:
    flow = make_flow(3)
    assert codec.flow_from_json(_through_text(codec.flow_to_json(flow))) == flow


def test_finding_round_trip() -> None:
    finding = make_finding(2)
    assert codec.finding_from_json(_through_text(codec.finding_to_json(finding))) == finding


def test_proposal_and_alert_round_trip() -> None:
    for proposal in (make_proposal(1), make_alert(2)):
        assert codec.proposal_from_json(_through_text(codec.proposal_to_json(proposal))) == proposal


def test_tmr_round_trip() -> None:
    rule = make_rule(4)
    assert codec.tmr_from_json(_through_text(codec.tmr_to_json(rule))) == rule


def test_tmrset_round_trip() -> None:
    document = make_tmr_document()
    assert codec.tmrset_to_json(codec.tmrset_from_json(_through_text(document))) == document


def test_proposal_json_has_the_documented_fields() -> None:
    data = codec.proposal_to_json(make_proposal())
    assert {"id", "kind", "state", "rule", "recommender", "score", "evidence", "impact"} <= set(data)
    assert set(data["rule"]) >= {"src", "dst", "protocol", "ports", "action", "priority", "expires_at"}
    assert set(data["evidence"]) >= {"finding_ids", "community_ids"}
    assert "newly_blocked_flows" in data["impact"]
