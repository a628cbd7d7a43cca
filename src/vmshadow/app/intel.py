"""Threat intel's composition root: feed documents read, validated, and stored all-or-nothing (or `partial`)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.intel.intel_match import IntelMatchDetector
from vmshadow.app.stores import opened, pending_proposals
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.finding import Finding
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import Proposal
from vmshadow.domain.tmr import TMRSet
from vmshadow.intel.lifecycle import IntelPolicy
from vmshadow.intel.misp import parse_misp_event
from vmshadow.intel.plain_list import load_plain_list
from vmshadow.intel.result import IntelImport
from vmshadow.intel.retro_hunt import key_filter, touching
from vmshadow.intel.stix import parse_stix_bundle
from vmshadow.ports.store import Store
from vmshadow.refinement.merge import keep_decision
from vmshadow.refinement.pending import with_pending_conflicts
from vmshadow.refinement.recommender import RecommendContext, recommender_types
from vmshadow.stages.recommend import run_recommend


class FeedFormat(StrEnum):
    AUTO = "auto"
    STIX = "stix"
    MISP = "misp"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class ImportReport:
    stored: int
    skipped: tuple[Issue, ...]
    errors: tuple[Issue, ...]  # non-empty only for a partial import


def detect_format(data: bytes) -> FeedFormat:
    """STIX when it is a JSON object of type bundle, MISP when it has an Event or Attribute list, else a list."""
    try:
        document: Any = json.loads(data)
    except ValueError:
        return FeedFormat.LIST
    if isinstance(document, dict) and document.get("type") == "bundle":
        return FeedFormat.STIX
    if isinstance(document, dict) and ("Event" in document or "Attribute" in document):
        return FeedFormat.MISP
    return FeedFormat.STIX if isinstance(document, dict) else FeedFormat.LIST


def read_feed(path: Path, fmt: FeedFormat, source: str) -> IntelImport:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(Issue(source=str(path), message=f"cannot read: {exc.strerror or exc}")) from None
    chosen = detect_format(data) if fmt is FeedFormat.AUTO else fmt
    if chosen is FeedFormat.STIX:
        return parse_stix_bundle(data, source, location=str(path))
    if chosen is FeedFormat.MISP:
        return parse_misp_event(data, source)
    return IntelImport(indicators=load_plain_list(path, source=source))


def store_import(
    db_url: str, result: IntelImport, *, partial: bool = False, at: datetime | None = None
) -> ImportReport:
    """Store the import's indicators. Without `partial`, any error refuses the whole document (nothing stored)."""
    indicators: list[Indicator] = list(result.indicators) if partial else result.accepted()
    with opened(db_url) as store:
        stored = store.save_indicators(indicators, at=at or datetime.now(UTC))
    return ImportReport(stored, tuple(result.skipped), tuple(result.errors) if partial else ())


def valid_indicators(db_url: str, at: datetime) -> list[Indicator]:
    with opened(db_url) as store:
        return store.indicators(at=at)


def sources(db_url: str, at: datetime) -> dict[str, tuple[int, int]]:
    """Per source: (indicators stored, valid now)."""
    with opened(db_url) as store:
        stored = store.indicators()
    total = Counter(i.source for i in stored)
    valid = Counter(i.source for i in stored if i.is_valid(at))
    return {s: (total[s], valid[s]) for s in sorted(total)}


def expire(db_url: str, at: datetime) -> int:
    with opened(db_url) as store:
        return store.expire_indicators(at)


@dataclass(frozen=True, slots=True)
class RetroHunt:
    flows_checked: int
    findings: tuple[Finding, ...]
    proposals: tuple[Proposal, ...]
    flows_matched: int = 0  # flows the prefilter decoded and gave to the detector
    seconds: dict[str, float] = field(default_factory=dict)  # scan, detect, recommend, store: where the time went


MAX_CONTEXT_FLOWS = 100_000  # recent flows the recommenders replay for impact, as in the live service
# Ongoing contacts a retro-hunt asks proposals for, the latest first: each costs an impact replay over the recent
# flows (about a second here), and the guard-rails' default rate cap (50 proposals per window) would turn the
# ones beyond into alerts anyway. The others are stored as findings all the same.
MAX_PROPOSED_CONTACTS = 50


def retro_hunt(
    db_url: str,
    indicators: list[Indicator],
    *,
    now: datetime,
    window: timedelta = timedelta(hours=24),
    ongoing: timedelta = timedelta(hours=1),
    tmrset: TMRSet | None = None,
) -> RetroHunt:
    """Check the archived flows of `window` against newly arrived indicators (see `retro_hunt_in`)."""
    with opened(db_url) as store:
        return retro_hunt_in(store, indicators, now=now, window=window, ongoing=ongoing, tmrset=tmrset)


def retro_hunt_in(
    store: Store,
    indicators: list[Indicator],
    *,
    now: datetime,
    window: timedelta = timedelta(hours=24),
    ongoing: timedelta = timedelta(hours=1),
    tmrset: TMRSet | None = None,
    trust: dict[str, float] | None = None,
    policy: IntelPolicy | None = None,
) -> RetroHunt:
    """Check the archived flows of `window` in `store` against newly arrived indicators.

    The archive is scanned by keys (`intel.retro_hunt.touching`), and only the flows touching a listed value are
    decoded and given to `IntelMatchDetector` (under `policy`: source trust and decay). Matches become
    back-dated findings marked `retro_hunt` (their times are the flows' times). Where the last contact is within
    `ongoing` of `now`, the contact looks ongoing and the recommenders are asked for proposals (against `tmrset`,
    with the recent flows for impact).
    """
    if not indicators:
        return RetroHunt(0, (), ())
    detector = IntelMatchDetector(None, DetectorContext(indicators=tuple(indicators)))
    if policy is not None:
        detector.use_policy(policy)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    since = now - window
    checked = store.count_flows(since=since)
    # the store drops, as it scans, the flows that cannot touch a listed value; `touching` decides on the rest
    keys = store.flow_keys(since=since, candidates=key_filter(detector.index))
    ids = list(touching(detector.index, keys))
    lap("scan")
    flows = store.flows_by_id(ids)
    found = [
        replace(f, measured={**f.measured, "retro_hunt": 1}, summary=f"retro-hunt: {f.summary}")
        for flow in flows
        for f in detector.observe(flow)
    ]
    recent = _latest_contacts([f for f in found if now - f.observed_at <= ongoing], MAX_PROPOSED_CONTACTS)
    lap("detect")
    proposals: list[Proposal] = []
    if recent:
        recommenders = [cls() for cls in recommender_types().values()]
        context_flows = store.flows(since=now - ongoing, limit=MAX_CONTEXT_FLOWS)
        context = RecommendContext(now=now, flows=tuple(context_flows))
        fresh = run_recommend(recent, tmrset or TMRSet(), recommenders, context, trust)
        proposals = [keep_decision(store.proposal(p.id), p) for p in fresh]
        # conflicts with the proposals waiting for review, as the live batches and `analyze --db` add them
        pending = pending_proposals(store)
        proposals = with_pending_conflicts(proposals, tmrset or TMRSet(), pending, now)
    lap("recommend")
    store.save_batch(findings=found, proposals=proposals)
    lap("store")
    return RetroHunt(checked, tuple(found), tuple(proposals), flows_matched=len(flows), seconds=seconds)


def _latest_contacts(findings: list[Finding], limit: int) -> list[Finding]:
    """The findings of the `limit` most recent contacts, one contact being a (local side, indicator) pair."""
    latest: dict[tuple[str, str | None], datetime] = {}
    for f in findings:
        key = (str(f.src_ip), f.indicator)
        latest[key] = max(latest.get(key, f.observed_at), f.observed_at)
    kept = set(sorted(latest, key=lambda k: latest[k], reverse=True)[:limit])
    return [f for f in findings if (str(f.src_ip), f.indicator) in kept]
