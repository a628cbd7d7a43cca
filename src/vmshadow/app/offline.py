"""Offline analysis: captures -> flows -> detectors -> recommenders -> (store) -> report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.feedback import trust_in, with_records
from vmshadow.app.stores import opened, pending_proposals
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import Proposal
from vmshadow.domain.tmr import TMRSet
from vmshadow.domain.vmn import VMNMap
from vmshadow.flows.capture_file import CaptureInfo
from vmshadow.flows.pcap import PcapSource
from vmshadow.ports.store import Store
from vmshadow.refinement.guardrails import GuardRails
from vmshadow.refinement.impact import DEFAULT_WINDOW
from vmshadow.refinement.merge import keep_decision
from vmshadow.refinement.pending import with_pending_conflicts
from vmshadow.refinement.recommender import RecommendContext, recommender_types
from vmshadow.stages.analyze import run_analyze
from vmshadow.stages.collector import tune_for_analysis
from vmshadow.stages.recommend import run_recommend

Progress = Callable[[int], None]  # called with the number of flows metered so far


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    captures: tuple[CaptureInfo, ...]
    flows: tuple[Flow, ...]
    findings: tuple[Finding, ...]
    proposals: tuple[Proposal, ...]


def with_vmns(tmrset: TMRSet, vmn_map: VMNMap | None) -> TMRSet:
    """The TMRSet knowing the VMNs of a separate map too; a VMN defined in both is an error."""
    if vmn_map is None or not len(vmn_map):
        return tmrset
    clash = sorted({v.name for v in vmn_map.vmns} & {v.name for v in tmrset.vmns})
    if clash:
        raise InputError(
            [Issue(source="--vmns", field=f"vmns.{n}", message="also defined in the rules file") for n in clash]
        )
    return replace(tmrset, vmns=tmrset.vmns + vmn_map.vmns)


def analyze_captures(
    paths: Sequence[Path],
    tmrset: TMRSet,
    *,
    now: datetime,
    indicators: Sequence[Indicator] = (),
    db_url: str | None = None,
    progress: Progress | None = None,
    guard_rails: GuardRails | None = None,
    impact_window: timedelta | None = DEFAULT_WINDOW,
) -> AnalysisReport:
    """Analyse captures against a TMRSet. Every input is checked before anything is stored; with `db_url`
    everything is stored in one transaction, and proposals already stored keep their state and gain evidence.
    `guard_rails` (from the settings file) bound what the recommenders may propose; the defaults otherwise.
    Every recommender runs once, the scheduled ones (least privilege) too: the captures are the whole window."""
    source = PcapSource(paths, tmrset.vmn_map)  # checks every capture first
    with ExitStack() as stack:
        store = stack.enter_context(opened(db_url)) if db_url is not None else None
        return _analyze(source, tmrset, store, now, indicators, progress, guard_rails, impact_window)


def _analyze(
    source: PcapSource,
    tmrset: TMRSet,
    store: Store | None,
    now: datetime,
    indicators: Sequence[Indicator],
    progress: Progress | None,
    guard_rails: GuardRails | None,
    impact_window: timedelta | None,
) -> AnalysisReport:
    if store is not None:  # indicators imported into the store count too
        indicators = [*indicators, *store.indicators(at=now)]
    detectors = build_detectors(DetectorContext(indicators=tuple(indicators)))
    tune_for_analysis()
    flows: list[Flow] = []
    findings: list[Finding] = []
    for flow, found in run_analyze(source, detectors):
        flows.append(flow)
        findings.extend(found)
        if progress is not None and len(flows) % 1000 == 0:
            progress(len(flows))
    if progress is not None:
        progress(len(flows))
    context = RecommendContext(
        now=now, flows=flows, guard_rails=guard_rails or GuardRails(), impact_window=impact_window
    )
    if store is not None:  # reports, past proposals (escalation) and recent ones (rate cap) are in the store
        context = with_records(store, context)
    recommenders = [cls() for cls in recommender_types().values()]
    # trust is earned in a store; without one every recommender starts from the prior
    trust = {r.name: trust_in(store, r.name, now) for r in recommenders} if store is not None else None
    proposals = run_recommend(findings, tmrset, recommenders, context, trust)
    pending: list[Proposal] = []
    if store is not None:
        proposals = [keep_decision(store.proposal(p.id), p) for p in proposals]
        pending = pending_proposals(store)
    # conflicts with the proposals waiting for review: those stored, and each other
    proposals = with_pending_conflicts(proposals, tmrset, pending, now)
    if store is not None:
        store.save_batch(flows=flows, findings=findings, proposals=proposals)
    return AnalysisReport(tuple(source.captures), tuple(flows), tuple(findings), tuple(proposals))
