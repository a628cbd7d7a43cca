"""`/metrics`: Prometheus exposition, collected at scrape time from the service's status file and the store.

Per VMN: packets mirrored (tc mirred action, GSO segments), analysed and dropped (socket) as the meter read them,
flows produced and flows shed (queue), and the flow rate over the service's last status interval. From the store:
findings by detector, proposals by state, and each recommender's trust now (the same Beta posterior that ranks and
gates its proposals; every registered recommender, the prior 0.5 for one without outcomes). With export settings
(`vmshadow api --settings`), per sink: export queue depth, dead letters, delivered, failed attempts and possible
duplicates, read from the queue files without writing to them. Nothing is cached between scrapes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vmshadow.analysis.registry import detector_types
from vmshadow.api.auth import Principal, Role, Tokens, requires
from vmshadow.app.exporting import export_stats
from vmshadow.app.stores import opened
from vmshadow.config.settings import ExportSettings
from vmshadow.domain.proposal import ProposalState
from vmshadow.feedback.trust import trust_by_recommender
from vmshadow.refinement.recommender import recommender_types

_VMN_COUNTERS = (
    (
        "mirrored_packets",
        "vmshadow_mirrored_packets",
        "Packets copied to the VMN's shadow port (tc mirred, GSO segments)",
    ),
    ("mirrored_bytes", "vmshadow_mirrored_bytes", "Bytes copied to the VMN's shadow port (tc mirred)"),
    ("shed_packets", "vmshadow_shed_copies", "Copies the VMN's copy budget refused in the kernel (load shedding)"),
    (
        "analysed_packets",
        "vmshadow_analysed_packets",
        "Mirrored packets the meter read (GSO-merged packets count once)",
    ),
    ("socket_dropped_packets", "vmshadow_socket_dropped_packets", "Mirrored packets the kernel could not hand over"),
    ("queue_dropped_flows", "vmshadow_queue_dropped_flows", "Flows shed because the analysis fell behind"),
    ("flows", "vmshadow_flows", "Flows metered on the VMN's shadow port"),
)


_EXPORT_GAUGES = (
    ("depth", "vmshadow_export_queue_depth", "Events waiting in the sink's export queue"),
    ("dead", "vmshadow_export_dead_letters", "Events the sink's receiver refused for good"),
)
_EXPORT_COUNTERS = (
    ("delivered", "vmshadow_export_delivered", "Events the sink confirmed"),
    ("failures", "vmshadow_export_failures", "Failed delivery attempts to the sink"),
    ("duplicates", "vmshadow_export_duplicates", "Events sent again after an attempt that may have reached the sink"),
)


class VmshadowCollector(Collector):
    def __init__(self, db_url: str, status_path: Path, export: ExportSettings | None = None) -> None:
        self.db_url = db_url
        self.status_path = status_path
        self.export = export

    def collect(self) -> Iterator[Metric]:
        rows = self._status_rows()
        for key, name, doc in _VMN_COUNTERS:
            family = CounterMetricFamily(name, doc + " since the service started", labels=["vmn"])
            for row in rows:
                family.add_metric([str(row.get("vmn", ""))], float(row.get(key, 0)))
            yield family
        rate = GaugeMetricFamily(
            "vmshadow_flows_per_second", "Flows metered per second over the last status interval", labels=["vmn"]
        )
        for row in rows:
            rate.add_metric([str(row.get("vmn", ""))], float(row.get("flows_per_s", 0.0)))
        yield rate
        yield from self._store_metrics()
        if self.export is not None:
            yield from self._export_metrics(self.export)

    def _store_metrics(self) -> Iterator[Metric]:
        with opened(self.db_url) as store:  # one unit of work per scrape
            stored = store.proposals()
            findings_by_detector = store.finding_counts()
            names = set(recommender_types()) | {p.recommender for p in stored}
            trust = trust_by_recommender(store.outcomes(), datetime.now(UTC), recommenders=names)
        findings = CounterMetricFamily("vmshadow_findings", "Findings stored, by detector", labels=["detector"])
        for detector in sorted(set(detector_types()) | set(findings_by_detector)):
            findings.add_metric([detector], float(findings_by_detector.get(detector, 0)))
        yield findings
        by_state = Counter(str(p.state) for p in stored)
        proposals = GaugeMetricFamily("vmshadow_proposals", "Proposals by review state", labels=["state"])
        for state in ProposalState:
            proposals.add_metric([str(state)], float(by_state.get(str(state), 0)))
        yield proposals
        gauge = GaugeMetricFamily(
            "vmshadow_recommender_trust", "Trust in the recommender now (0..1; below the gate: alerts only)",
            labels=["recommender"],
        )  # fmt: skip
        for name, snapshot in sorted(trust.items()):
            gauge.add_metric([name], snapshot.trust)
        yield gauge

    def _export_metrics(self, export: ExportSettings) -> Iterator[Metric]:
        stats = export_stats(export)  # a sink whose queue does not exist yet has nothing queued or counted
        for key, name, doc in _EXPORT_GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=["sink"])
            for sink, row in stats.items():
                gauge.add_metric([sink], float(getattr(row, key)) if row is not None else 0.0)
            yield gauge
        for key, name, doc in _EXPORT_COUNTERS:
            counter = CounterMetricFamily(name, doc + " since its queue was created", labels=["sink"])
            for sink, row in stats.items():
                counter.add_metric([sink], float(getattr(row, key)) if row is not None else 0.0)
            yield counter

    def _status_rows(self) -> list[dict[str, Any]]:
        try:
            document = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return []  # no service running: no per-VMN series, not an error
        rows = document.get("vmns", [])
        return [r for r in rows if isinstance(r, dict)]


def router(db_url: str, status_path: Path, tokens: Tokens, export: ExportSettings | None = None) -> APIRouter:
    registry = CollectorRegistry()
    registry.register(VmshadowCollector(db_url, status_path, export))
    r = APIRouter(tags=["metrics"])

    @r.get("/metrics", response_class=Response)
    def metrics(who: Principal = Depends(requires(tokens, Role.VIEWER))) -> Response:  # noqa: B008
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return r
