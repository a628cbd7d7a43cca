"""Threat intel end to end on a real lab (issue 7): a VMN contacts an outside host; later a STIX indicator for that
host arrives through POST /intel/stix; the running service's refresh duty retro-hunts the archive and raises a
back-dated finding; a new contact then produces a deny proposal citing the indicator within 5 s, whose TMR expires
with the indicator.

The "outside host" is the lab's `c2` namespace (traffic stays between the test's own namespaces). Run under the
kernel lock: ``flock /tmp/vms-kernel.lock .venv/bin/pytest tests/integration/test_intel_e2e.py``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.integration.labkit import metered, send_udp, tagged_lab, wait_for
from vmshadow.adapters.sql import open_store
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.api.app import create_app
from vmshadow.api.auth import Principal, Role, Tokens, token_digest
from vmshadow.app.embedded import EmbeddedService, utc_now
from vmshadow.app.intel_refresh import intel_duties
from vmshadow.app.tm import TMSettings
from vmshadow.config.intel_settings import IntelSettings
from vmshadow.domain.finding import Finding
from vmshadow.domain.proposal import Proposal, ProposalKind
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.flows.live import LiveSource
from vmshadow.lab.state import LabHost
from vmshadow.refinement.recommender import recommender_types

pytestmark = pytest.mark.slow

C2_PORT = 8443
PROPOSED_WITHIN_S = 5.0  # issue 7: a new contact gives a deny proposal citing the indicator within 5 s
FEED_TOKEN = "feed-token"
INDICATOR_ID = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"


def contact(src: LabHost, dst: LabHost) -> None:
    """A few datagrams from `src` to the host's port: a beacon (UDP, as the lab's live-source tests send)."""
    send_udp(src.namespace, str(dst.address.ip), range(C2_PORT, C2_PORT + 1), payload=b"beacon", repeat=3)


def stix_bundle(address: str, valid_from: datetime, valid_until: datetime) -> dict[str, object]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "type": "bundle",
        "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
        "objects": [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": INDICATOR_ID,
                "created": stamp,
                "modified": stamp,
                "name": "lab C2",
                "indicator_types": ["malicious-activity"],
                "pattern": f"[ipv4-addr:value = '{address}']",
                "pattern_type": "stix",
                "valid_from": valid_from.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "valid_until": valid_until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "confidence": 90,
            }
        ],
    }


def test_contact_then_indicator_then_retro_hunt_then_a_deny_within_5_s(tmp_path: Path) -> None:
    with tagged_lab(tmp_path / "lab", letter="i") as lab:
        vm1 = lab.vmns[0]
        c2 = next(h for h in lab.outside if h.name.endswith("c2"))
        db = f"sqlite:///{tmp_path / 'v.db'}"
        vmns = tuple(h.vmn() for h in lab.vmns)
        tmrset = TMRSet(tmrs=(TMR("allow-all", 1000, Endpoint.any(), Endpoint.any(), Action.ALLOW),), vmns=vmns)
        store = open_store(db)
        detectors = build_detectors(DetectorContext())
        service = EmbeddedService(
            source=LiveSource([metered(h) for h in lab.vmns], lab.vmn_map()),
            store=store,
            tmrset=tmrset,
            detectors=detectors,
            recommenders=[cls() for cls in recommender_types().values()],
            status_path=tmp_path / "status.json",
            periodic=intel_duties(store, detectors, IntelSettings(refresh_s=0.2), clock=utc_now, tmrset=lambda: tmrset),
        )
        tokens = Tokens({token_digest(FEED_TOKEN): Principal("cti", Role.INTEL_FEED)})
        client = TestClient(create_app(db, TMSettings(db_url=db, bridges=(lab.bridge,)), tokens))
        stop = threading.Event()
        runner = threading.Thread(target=service.run, args=(stop,), name="sae")
        runner.start()
        try:
            _story(vm1, c2, service, client)
        finally:
            stop.set()
            runner.join(timeout=30)
            store.close()
        assert not runner.is_alive(), "the service stopped when asked"


def _story(vm1: LabHost, c2: LabHost, service: EmbeddedService, client: TestClient) -> None:
    store = service.store
    # a meter reads its port only once it runs: wait until each has read a heartbeat, not just been sent one
    wait_for(lambda: all(h.processed >= 1 for h in service.source.health.values()), timeout_s=15, what="meters")

    # 1. vm1 contacts the outside host while nobody knows it is bad: archived, nothing found
    first_contact_at = datetime.now(UTC)
    contact(vm1, c2)
    wait_for(
        lambda: [f for f in store.flows() if str(f.dst_ip) == str(c2.address.ip) and f.dst_port == C2_PORT],
        timeout_s=20,
        what="the first contact archived",
        detail=lambda: (
            f"flows {[(str(f.src_ip), str(f.dst_ip), f.dst_port) for f in store.flows()]}, "
            f"meters {service.source.health}"
        ),
    )
    assert not store.findings(), "no indicator yet, no finding"

    # 2. a feed pushes a STIX indicator for the host; it was bad since yesterday and is listed for a week
    valid_from = first_contact_at - timedelta(days=1)
    valid_until = (first_contact_at + timedelta(days=7)).replace(microsecond=0)
    pushed_at = datetime.now(UTC)
    answer = client.post(
        "/intel/stix",
        json=stix_bundle(str(c2.address.ip), valid_from, valid_until),
        headers={"Authorization": f"Bearer {FEED_TOKEN}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 1

    # 3. the service's refresh duty retro-hunts the archive: a back-dated finding, marked as such
    def retro_findings() -> list[Finding]:
        return [f for f in store.findings() if f.measured.get("retro_hunt") == 1]

    (retro,) = wait_for(
        retro_findings,
        timeout_s=10,
        what="a retro-hunt finding",
        detail=lambda: f"findings {store.findings()}, status {(service.status_path).read_text()}",
    )
    assert retro.observed_at < pushed_at, "back-dated to the contact, before the indicator arrived"
    assert retro.src_vmn == vm1.name
    assert retro.indicator == str(c2.address.ip)
    assert retro.measured["indicator_id"] == INDICATOR_ID

    # 4. a new contact: the running detector knows the indicator now, and a deny citing it follows within 5 s
    contact_at = time.monotonic()
    contact(vm1, c2)

    def live_deny() -> list[Proposal]:
        live = {f.id for f in store.findings() if f.indicator == str(c2.address.ip) and "retro_hunt" not in f.measured}
        return [
            p
            for p in store.proposals()
            if p.kind is ProposalKind.ADD_DENY and p.rule is not None and live & set(p.evidence.finding_ids)
        ]

    (proposal,) = wait_for(
        live_deny,
        timeout_s=PROPOSED_WITHIN_S,
        what="a deny proposal for the new contact",
        detail=lambda: f"findings {store.findings()}, proposals {store.proposals()}",
    )
    took_s = time.monotonic() - contact_at
    assert took_s <= PROPOSED_WITHIN_S
    assert proposal.rule is not None
    assert proposal.rule.dst == Endpoint.network(c2.address.ip)
    assert proposal.evidence.measured["indicator_id"] == INDICATOR_ID, "the proposal cites the indicator"
    assert proposal.rule.expires_at == valid_until, "the TMR expires with the indicator"
