"""The embedded service: shadow ports -> flows -> detectors -> proposals -> store, in one process.

Proposals are stored before they are shown (nothing is lost if the process dies after showing one) and before
`on_stored` hands the batch's findings and proposals on (to the SIEM exporter). Live health
(per-VMN packets metered, dropped, flows) is written to a status file every second for `vmshadow vmns`.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vmshadow.analysis.detector import Detector
from vmshadow.app.feedback import RECORDS_LOOKBACK, with_records
from vmshadow.app.paths import write_json_atomically
from vmshadow.app.stores import pending_proposals
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.proposal import Proposal, ProposalState
from vmshadow.domain.tmr import TMRSet
from vmshadow.flows.live import LiveSource, PortHealth
from vmshadow.ports.store import Store
from vmshadow.refinement.guardrails import GuardRails
from vmshadow.refinement.impact import DEFAULT_WINDOW
from vmshadow.refinement.merge import keep_decision, merge_proposals
from vmshadow.refinement.pending import with_pending_conflicts
from vmshadow.refinement.recommender import RecommendContext, Recommender
from vmshadow.refinement.widen import placed
from vmshadow.stages.analyze import analyze_batch, run_analyze
from vmshadow.stages.collector import tune_for_analysis
from vmshadow.stages.recommend import per_batch, run_recommend, scheduled

RECENT_FLOWS = 100_000  # kept in memory for impact replay; older ones are in the store
FLUSH_EVERY_S = 1.0
RECORDS_EVERY_S = 30.0  # how often the store's records (reports, proposals of the last week) are read again

Clock = Callable[[], datetime]
MirrorCounters = Callable[[], dict[str, dict[str, int]]]  # VMN -> {"packets": n, "bytes": n}
OnProposal = Callable[[Proposal], None]
OnStored = Callable[[Sequence[Finding], Sequence[Proposal]], object]  # after the batch is stored, e.g. export


@dataclass
class Periodic:
    """Work the service does every `every_s` seconds between batches (intel refresh, outcome measuring, export).

    A task that raises is logged in the status file and tried again at its next turn: one failing duty must not
    stop metering.
    """

    name: str
    every_s: float
    run: Callable[[], object]
    last_run: datetime | None = None
    last_error: str | None = None

    def due(self, now: datetime) -> bool:
        return self.last_run is None or (now - self.last_run).total_seconds() >= self.every_s

    def tick(self, now: datetime) -> None:
        self.last_run = now
        try:
            self.run()
            self.last_error = None
        except Exception as exc:  # reported in the status file, retried next turn
            self.last_error = f"{type(exc).__name__}: {exc}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class EmbeddedService:
    source: LiveSource
    store: Store
    tmrset: TMRSet
    detectors: Sequence[Detector[Any]]
    recommenders: Sequence[Recommender]
    status_path: Path
    mirror_counters: MirrorCounters = dict
    on_proposal: OnProposal = lambda p: None
    on_stored: OnStored = lambda findings, proposals: None
    guard_rails: GuardRails = GuardRails()  # noqa: RUF009 - frozen, safely shared
    clock: Clock = utc_now
    trust: Callable[[], dict[str, float]] = dict  # recommender name -> trust now; empty: the prior
    periodic: Sequence[Periodic] = ()
    impact_window: timedelta | None = DEFAULT_WINDOW  # recorded flows an impact replays
    recent: deque[Flow] = field(default_factory=lambda: deque(maxlen=RECENT_FLOWS))
    _pending_flows: list[Flow] = field(default_factory=list)
    _pending_findings: list[Finding] = field(default_factory=list)
    _mirrored_at_start: dict[str, dict[str, int]] = field(default_factory=dict)
    _last_status: tuple[datetime, dict[str, int]] | None = None  # when, and flows per VMN then: for flows/s
    records_every_s: float = RECORDS_EVERY_S
    _records: tuple[datetime, RecommendContext] | None = None  # when the store's records were read, and them
    _stored_since: dict[str, Proposal] = field(default_factory=dict)  # proposals this service stored since then

    def run(self, stop: threading.Event) -> None:
        """Meter and analyse until `stop` is set; then stop the meters and store what is pending."""
        tune_for_analysis()
        self._mirrored_at_start = self.mirror_counters()  # tc counters run since attach; report this run's share
        self.source.start()
        self.write_status()
        last_flush = self.clock()
        try:
            while not stop.is_set():
                for batch in self.source.batches(timeout=0.2):  # what has arrived: no flow waits for others
                    urgent = False
                    for flow, findings in analyze_batch(batch, self.detectors):
                        self.recent.append(flow)
                        self._pending_flows.append(flow)
                        if findings:
                            self._pending_findings.extend(findings)
                            urgent = True
                    if urgent:
                        self._flush()  # findings are urgent: propose now
                    if stop.is_set() or (self.clock() - last_flush).total_seconds() >= FLUSH_EVERY_S:
                        break
                self._flush()
                self._run_periodic()
                self.write_status()
                last_flush = self.clock()
        finally:
            self.source.stop()
            for flow, findings in run_analyze(self.source.flows(timeout=0), self.detectors):
                self._pending_flows.append(flow)
                self._pending_findings.extend(findings)
            self._flush()
            self.write_status()

    def _flush(self) -> None:
        findings, flows = self._pending_findings, self._pending_flows
        if not findings and not flows:
            return
        proposals: list[Proposal] = []
        if findings:
            fresh = run_recommend(findings, self.tmrset, per_batch(self.recommenders), self._context(), self.trust())
            proposals = self._placed(fresh)
        self.store.save_batch(flows=flows, findings=findings, proposals=proposals)
        self._stored(proposals)
        self._pending_flows, self._pending_findings = [], []
        if findings or proposals:
            self.on_stored(findings, proposals)
        for p in proposals:
            self.on_proposal(p)

    def _context(self) -> RecommendContext:
        """What recommenders see: recent flows, guard-rails, the impact window, and from the store the reports,
        past proposals (escalation) and recent ones (rate cap).

        The store's records are read every `records_every_s` (they span a week and the store holds every proposal
        ever made: reading them for every batch with findings cost ~1 s at 20,000 proposals); in between, the
        proposals this service stored are added to them, so its own count at once (rate cap, escalation), and the
        windows slide with the clock. What other processes record (reports, decisions, their proposals) is seen
        at the next read."""
        now = self.clock()
        context = RecommendContext(
            now=now, flows=tuple(self.recent), guard_rails=self.guard_rails, impact_window=self.impact_window
        )
        if self._records is None or not 0 <= (now - self._records[0]).total_seconds() < self.records_every_s:
            self._records, self._stored_since = (now, with_records(self.store, context)), {}
        records = self._records[1]
        since, rate_since = now - RECORDS_LOOKBACK, now - self.guard_rails.rate_window
        known = {p.id: p for p in records.past_proposals} | self._stored_since
        proposals = tuple(p for p in known.values() if since < p.created_at <= now)
        return replace(
            context,
            reports=tuple(r for r in records.reports if since < r.outcome.observed_at <= now),
            past_proposals=proposals,
            recent_proposals=tuple(p for p in proposals if rate_since < p.created_at),
        )

    def _stored(self, proposals: Sequence[Proposal]) -> None:
        self._stored_since.update((p.id, p) for p in proposals)

    def recommend_scheduled(self) -> list[Proposal]:
        """Run the recommenders that read the whole window rather than a batch (least privilege); a periodic duty.
        Their proposals are stored, exported and shown like any other."""
        chosen = scheduled(self.recommenders)
        if not chosen:
            return []
        fresh = run_recommend([], self.tmrset, chosen, self._context(), self.trust())
        proposals = self._placed(fresh)
        if proposals:
            self.store.save_batch(proposals=proposals)
            self._stored(proposals)
            self.on_stored([], proposals)
            for p in proposals:
                self.on_proposal(p)
        return proposals

    def _placed(self, fresh: Sequence[Proposal]) -> list[Proposal]:
        """A fresh proposal made again keeps the stored one's decision; a new one may widen (or join) a proposal
        still waiting for review instead of standing beside it (`refinement.widen`). Then each one still pending
        gets its conflicts with the other pending proposals (`refinement.pending`). The pending proposals are read
        once per batch, and only when a batch has a proposal."""
        if not fresh:
            return []
        pending = pending_proposals(self.store)
        waiting = [p for p in pending if p.state is ProposalState.PROPOSED]
        out = []
        for p in fresh:
            stored = self.store.proposal(p.id)
            out.append(keep_decision(stored, p) if stored is not None else placed(p, waiting))
        return with_pending_conflicts(merge_proposals(out), self.tmrset, pending, self.clock())

    def _run_periodic(self) -> None:
        now = self.clock()
        for task in self.periodic:
            if task.due(now):
                task.tick(now)

    def write_status(self) -> None:
        """Per-VMN health as JSON, written atomically (rename) so readers never see half a file."""
        now = self.mirror_counters()
        mirrored = {
            vmn: {k: v - self._mirrored_at_start.get(vmn, {}).get(k, 0) for k, v in counters.items()}
            for vmn, counters in now.items()
        }
        at = self.clock()
        flows = {h.vmn: h.flows for h in self.source.health.values()}
        rates: dict[str, float] = {}
        if self._last_status is not None:
            elapsed = (at - self._last_status[0]).total_seconds()
            if elapsed > 0:
                rates = {vmn: max(0, n - self._last_status[1].get(vmn, 0)) / elapsed for vmn, n in flows.items()}
        self._last_status = (at, flows)
        rows = [_health_row(h, mirrored.get(h.vmn, {}), rates.get(h.vmn, 0.0)) for h in self.source.health.values()]
        document = {
            "updated_at": at.isoformat(),
            "pid": os.getpid(),
            "vmns": rows,
            "periodic": [
                {"name": t.name, "last_run": t.last_run.isoformat() if t.last_run else None, "error": t.last_error}
                for t in self.periodic
            ],
        }
        write_json_atomically(self.status_path, document, indent=2)


def _health_row(h: PortHealth, mirrored: dict[str, int], flows_per_s: float) -> dict[str, Any]:
    return {
        "vmn": h.vmn,
        "shadow_port": h.interface,
        "mirrored_packets": mirrored.get("packets", 0),
        "mirrored_bytes": mirrored.get("bytes", 0),
        # a changed budget restarts its counter, so the since-start difference can dip below zero
        "shed_packets": max(0, mirrored.get("shed_packets", 0)),
        "shed_bytes": max(0, mirrored.get("shed_bytes", 0)),
        "analysed_packets": h.analysed,
        "socket_dropped_packets": h.socket_dropped,
        "queue_dropped_flows": h.queue_dropped,
        "flows": h.flows,
        "flows_per_s": round(flows_per_s, 3),
        "error": h.error,
    }
