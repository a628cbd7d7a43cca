"""`/metrics` parses with prometheus-client's own parser and carries the per-VMN counters and proposal states."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import make_proposal
from vmshadow.adapters.sql import open_store
from vmshadow.api.app import create_app
from vmshadow.api.auth import Principal, Role, Tokens, token_digest
from vmshadow.app.tm import TMSettings
from vmshadow.domain.proposal import ProposalState


def test_metrics_expose_vmn_health_and_proposals(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    store = open_store(db)
    store.save_batch(proposals=[make_proposal(1), make_proposal(2, state=ProposalState.APPROVED)])
    store.close()
    status = tmp_path / "status.json"
    status.write_text(
        json.dumps({"vmns": [
            {"vmn": "vm1", "mirrored_packets": 120, "analysed_packets": 118, "socket_dropped_packets": 2, "flows": 9},
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


def test_metrics_without_a_running_service_have_no_vmn_series(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'v.db'}"
    tokens = Tokens({token_digest("t"): Principal("prom", Role.VIEWER)})
    client = TestClient(create_app(db, TMSettings(db_url=db), tokens, status_path=tmp_path / "missing.json"))
    text = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "vmshadow_mirrored_packets_total" not in names
    assert "vmshadow_proposals" in names
