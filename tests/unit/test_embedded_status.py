"""The service's status file: per-VMN health with the flow rate over the last interval, and its periodic duties."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from tests.factories import at
from vmshadow.adapters.sql import open_store
from vmshadow.app.embedded import EmbeddedService, Periodic
from vmshadow.domain.tmr import TMRSet
from vmshadow.flows.live import PortHealth


class Health:
    def __init__(self) -> None:
        self.health = {"vm1": PortHealth("vm1", "vmsr-vm1"), "vm2": PortHealth("vm2", "vmsr-vm2")}


def test_flow_rate_is_per_vmn_over_the_last_interval_and_failing_duties_are_shown(tmp_path: Path) -> None:
    now = [at(0)]
    shed = [500]
    source = Health()
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("feed unreachable")

    store = open_store(f"sqlite:///{tmp_path / 'v.db'}")
    service = EmbeddedService(
        source=source,  # type: ignore[arg-type]
        store=store,
        tmrset=TMRSet(),
        detectors=[],
        recommenders=[],
        status_path=tmp_path / "status.json",
        clock=lambda: now[0],
        mirror_counters=lambda: {"vm1": {"packets": 10, "shed_packets": shed[0]}},
        periodic=[Periodic("intel.refresh", 10.0, broken)],
    )

    def rows() -> dict[str, dict[str, object]]:
        return {r["vmn"]: r for r in json.loads(service.status_path.read_text())["vmns"]}

    service._mirrored_at_start = service.mirror_counters()
    shed[0] = 540
    service.write_status()
    assert rows()["vm1"]["flows_per_s"] == 0  # no interval yet
    assert rows()["vm1"]["shed_packets"] == 40
    shed[0] = 3  # a new budget restarted its counter: never a negative count
    service.write_status()
    assert rows()["vm1"]["shed_packets"] == 0
    source.health["vm1"].flows, source.health["vm2"].flows = 30, 5
    now[0] += timedelta(seconds=2)
    service.write_status()
    assert (rows()["vm1"]["flows_per_s"], rows()["vm2"]["flows_per_s"]) == (15.0, 2.5)

    service._run_periodic()
    service._run_periodic()  # not due again yet
    now[0] += timedelta(seconds=10)
    service._run_periodic()
    service.write_status()
    store.close()
    assert len(calls) == 2
    duty = json.loads(service.status_path.read_text())["periodic"][0]
    assert duty["name"] == "intel.refresh"
    assert duty["error"] == "RuntimeError: feed unreachable"
    assert duty["last_run"] == now[0].isoformat()
