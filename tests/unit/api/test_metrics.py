"""`/metrics` parses with prometheus-client's own parser and carries the per-VMN counters and proposal states."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import at, make_finding, make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.api.app import create_app
from vmshadow.api.auth import Principal, Role, Tokens, token_digest
from vmshadow.app.tm import TMSettings
from vmshadow.domain.outcome import Outcome, OutcomeKind
from vmshadow.domain.proposal import ProposalState


def test_metrics_expose_vmn_health_and_proposals(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    store = open_store(db)
    store.save_batch(
        proposals=[make_proposal(1), make_proposal(2, state=ProposalState.APPROVED)],
        findings=[make_finding(1), make_finding(2), make_finding(3, detector="intel.match")],
    )
    store.record_outcome(Outcome("out-1", "prop-1", "deny_scanner", OutcomeKind.FALSE_POSITIVE, at(900)))
    store.close()
    status = tmp_path / "status.json"
    status.write_text(
        json.dumps({"vmns": [
            {"vmn": "vm1", "mirrored_packets": 120, "analysed_packets": 118, "socket_dropped_packets": 2, "flows": 9,
             "flows_per_s": 4.5, "shed_packets": 31},
            {"vmn": "vm2", "mirrored_packets": 7, "analysed_packets": 7, "queue_dropped_flows": 3, "flows": 1},
        ]})
    )  # fmt: skip
    tokens = Tokens({token_digest("t"): Principal("prom", Role.VIEWER)})
    client = TestClient(create_app(db, TMSettings(db_url=db), tokens, status_path=status))
    assert client.get("/metrics").status_code == 401
    answer = client.get("/metrics", headers={"Authorization": "Bearer t"})
    assert answer.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    assert samples[("vmshadow_mirrored_packets_total", (("vmn", "vm1"),))] == 120
    assert samples[("vmshadow_socket_dropped_packets_total", (("vmn", "vm1"),))] == 2
    assert samples[("vmshadow_queue_dropped_flows_total", (("vmn", "vm2"),))] == 3
    assert samples[("vmshadow_proposals", (("state", "proposed"),))] == 1
    assert samples[("vmshadow_proposals", (("state", "approved"),))] == 1
    assert samples[("vmshadow_proposals", (("state", "rejected"),))] == 0
    assert samples[("vmshadow_flows_per_second", (("vmn", "vm1"),))] == 4.5
    assert samples[("vmshadow_shed_copies_total", (("vmn", "vm1"),))] == 31
    assert samples[("vmshadow_flows_per_second", (("vmn", "vm2"),))] == 0
    assert samples[("vmshadow_findings_total", (("detector", "hunting.port_scan"),))] == 2
    assert samples[("vmshadow_findings_total", (("detector", "intel.match"),))] == 1
    assert samples[("vmshadow_findings_total", (("detector", "hunting.brute_force"),))] == 0  # registered, none yet
    # A false positive pulls the recommender below the prior; a registered one without outcomes sits at the prior.
    assert samples[("vmshadow_recommender_trust", (("recommender", "deny_scanner"),))] < 0.5
    assert samples[("vmshadow_recommender_trust", (("recommender", "refinement.scoped_deny"),))] == 0.5


def test_metrics_without_a_running_service_have_no_vmn_series(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    tokens = Tokens({token_digest("t"): Principal("prom", Role.VIEWER)})
    client = TestClient(create_app(db, TMSettings(db_url=db), tokens, status_path=tmp_path / "missing.json"))
    text = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "vmshadow_mirrored_packets_total" not in names
    assert "vmshadow_proposals" in names
