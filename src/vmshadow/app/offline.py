"""Offline analysis: captures -> flows -> detectors -> recommenders -> (store) -> report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from vmshadow.adapters.sql import open_store
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.feedback import current_trust
from vmshadow.app.intel import valid_indicators
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.finding import Finding
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import Proposal
from vmshadow.domain.tmr import TMRSet
from vmshadow.domain.vmn import VMNMap
from vmshadow.flows.capture_file import CaptureInfo
from vmshadow.flows.pcap import PcapSource
from vmshadow.refinement.guardrails import GuardRails
from vmshadow.refinement.merge import merge_proposals
from vmshadow.refinement.recommender import RecommendContext, recommender_types
from vmshadow.stages.analyze import run_analyze
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
) -> AnalysisReport:
    """Analyse captures against a TMRSet. Every input is checked before anything is stored; with `db_url`
    everything is stored in one transaction, and proposals already stored keep their state and gain evidence.
    `guard_rails` (from the settings file) bound what the recommenders may propose; the defaults otherwise."""
    source = PcapSource(paths, tmrset.vmn_map)  # checks every capture first
    if db_url is not None:  # indicators imported into the store count too
        indicators = [*indicators, *valid_indicators(db_url, now)]
    detectors = build_detectors(DetectorContext(indicators=tuple(indicators)))
    flows: list[Flow] = []
    findings: list[Finding] = []
    for flow, found in run_analyze(source, detectors):
        flows.append(flow)
        findings.extend(found)
        if progress is not None and len(flows) % 1000 == 0:
            progress(len(flows))
    if progress is not None:
        progress(len(flows))
    context = RecommendContext(now=now, flows=flows, guard_rails=guard_rails or GuardRails())
    recommenders = [cls() for cls in recommender_types().values()]
    # trust is earned in a store; without one every recommender starts from the prior
    trust = {r.name: current_trust(db_url, r.name, now) for r in recommenders} if db_url is not None else None
    proposals = run_recommend(findings, tmrset, recommenders, context, trust)
    if db_url is not None:
        store = open_store(db_url)
        try:
            stored = {p.id: p for p in (store.proposal(x.id) for x in proposals) if p is not None}
            proposals = [_keep_state(stored[p.id], p) if p.id in stored else p for p in proposals]
            store.save_batch(flows=flows, findings=findings, proposals=proposals)
        finally:
            store.close()
    return AnalysisReport(tuple(source.captures), tuple(flows), tuple(findings), tuple(proposals))


def _keep_state(stored: Proposal, fresh: Proposal) -> Proposal:
    """A re-proposed rule adds evidence to the stored proposal; the administrator's decision stands."""
    merged = merge_proposals([stored, fresh])[0]
    return replace(merged, state=stored.state, created_at=stored.created_at)
