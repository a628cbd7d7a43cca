"""Composition of `vmshadow run`: find the VMNs, feed their shadow ports, put the TMRs in force, run the SAE."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vmshadow.adapters.sql import open_store
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.adoption import ADOPT_EVERY_S, FOLLOW_EVERY_S, Adoption, FollowInForce, knowing
from vmshadow.app.embedded import EmbeddedService, OnStored, Periodic, utc_now
from vmshadow.app.feedback import measure, trust_in
from vmshadow.app.intel_refresh import intel_duties, live_indicators
from vmshadow.app.paths import DEFAULT_STATUS
from vmshadow.app.tm import ApplyResult, TMSettings, apply_tmrset, open_enforcer
from vmshadow.capture import shadow_port
from vmshadow.capture.budget import CopyBudget
from vmshadow.capture.discovery import discover_vmns
from vmshadow.config.intel_settings import IntelSettings
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.indicator import Indicator
from vmshadow.domain.proposal import Proposal
from vmshadow.domain.tmr import TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.flows.live import LiveSource, MeteredPort
from vmshadow.lab.topology import Lab
from vmshadow.refinement.guardrails import GuardRails
from vmshadow.refinement.impact import DEFAULT_WINDOW
from vmshadow.refinement.recommender import recommender_types


class KeepBudget(enum.Enum):
    """`ServiceOptions.copy_budget` when the operator asked for none: `lab up --copy-budget` (or an earlier run)
    chose it, and a restart must not undo that choice."""

    KEEP = "keep"


KEEP_BUDGET = KeepBudget.KEEP
SCHEDULED_EVERY_S = 3600.0  # least privilege over the last day's flows: hourly is fresh enough
DEFAULT_SNAPLEN = 1536  # enough for every header and the first bytes nDPI needs


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    db_url: str
    bridge: str | None = None  # None: the lab
    mapping_file: Path | None = None
    both_directions: bool = False
    status_path: Path = DEFAULT_STATUS
    copy_budget: CopyBudget | KeepBudget | None = KEEP_BUDGET  # keep: a port keeps the budget it has (new: default)


@dataclass(frozen=True, slots=True)
class Watched:
    """A VMN and the shadow port that feeds the SAE with what it sends."""

    vmn: VMN
    port: shadow_port.ShadowPort


def watched_bridge(options: ServiceOptions) -> str:
    """The bridge the service watches: the given one, else the lab's."""
    if options.bridge is not None:
        return options.bridge
    state = Lab().state()
    if state is None:
        raise InputError(Issue("run", "no lab is up and no --bridge given; run `vmshadow lab up` first"))
    return state.bridge


def bridge_vmns(options: ServiceOptions) -> tuple[list[VMN], bool]:
    """The VMNs on the watched bridge now (the lab's, or discovered on `--bridge`), and whether their shadow ports
    copy both directions."""
    if options.bridge is None:
        state = Lab().state()
        if state is None:
            raise InputError(Issue("run", "no lab is up and no --bridge given; run `vmshadow lab up` first"))
        return [h.vmn() for h in state.vmns], state.both_directions
    vmns = discover_vmns(options.bridge, options.mapping_file)
    if not vmns:
        raise InputError(Issue("run", f"no VMN interfaces on bridge {options.bridge}", field="bridge"))
    return vmns, options.both_directions


def attach_watched(options: ServiceOptions, vmns: list[VMN], both: bool) -> list[Watched]:
    """Each VMN with its (idempotently attached) shadow port, under the copy budget the options ask for."""
    asked = options.copy_budget
    # keep: each port's budget as the kernel has it (a VMN without a shadow port yet gets the default)
    kept = {p.vmn: p.budget for p in shadow_port.find_attached()} if isinstance(asked, KeepBudget) else {}
    watched = []
    for vmn in vmns:
        budget = kept.get(vmn.name, shadow_port.DEFAULT_BUDGET) if isinstance(asked, KeepBudget) else asked
        port = shadow_port.attach(vmn.name, vmn.interfaces[0], both_directions=both, budget=budget)
        watched.append(Watched(vmn, port))
    return watched


def watched_vmns(options: ServiceOptions) -> list[Watched]:
    """The VMNs to watch, each with its (idempotently attached) shadow port."""
    return attach_watched(options, *bridge_vmns(options))


def tm_settings(options: ServiceOptions) -> TMSettings:
    """The TM of the watched bridge, over the service's store."""
    return TMSettings(db_url=options.db_url, bridges=(watched_bridge(options),))


def with_watched(tmrset: TMRSet, watched: list[Watched]) -> TMRSet:
    """The TMRSet knowing every watched VMN; VMNs the rules file defines keep its definition."""
    return knowing(tmrset, [w.vmn for w in watched])


def build_service(
    options: ServiceOptions,
    tmrset: TMRSet,
    watched: list[Watched],
    *,
    indicators: tuple[Indicator, ...] = (),
    on_proposal: Callable[[Proposal], None] = lambda p: None,
    on_stored: OnStored = lambda findings, proposals: None,
    guard_rails: GuardRails | None = None,
    impact_window: timedelta | None = DEFAULT_WINDOW,
    intel: IntelSettings | None = None,
) -> EmbeddedService:
    tmrset = with_watched(tmrset, watched)
    ports = [MeteredPort(w.vmn.name, w.port.reader_interface, w.port.shadow_interface) for w in watched]
    by_vmn = {w.vmn.name: w.port for w in watched}

    def mirrored() -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name, port in by_vmn.items():
            counters = shadow_port.mirror_counters(port)
            shed = shadow_port.shed_counters(port)  # copies the budget refused, in the kernel
            out[name] = {
                "packets": sum(c.packets for c in counters.values()),
                "bytes": sum(c.bytes for c in counters.values()),
                "shed_packets": shed.packets,
                "shed_bytes": shed.bytes,
            }
        return out

    recommenders = [cls() for cls in recommender_types().values()]
    store = open_store(options.db_url)  # one store for the service's life: no re-open (and migration check) per batch
    # held indicators include those whose valid_from is still ahead: the index passes over them until then
    detectors = build_detectors(DetectorContext(indicators=(*indicators, *live_indicators(store, datetime.now(UTC)))))
    service = EmbeddedService(
        source=LiveSource(ports, tmrset.vmn_map, snapshot_length=_snaplen(watched)),
        store=store,
        tmrset=tmrset,
        detectors=detectors,
        recommenders=recommenders,
        status_path=options.status_path,
        mirror_counters=mirrored,
        on_proposal=on_proposal,
        on_stored=on_stored,
        guard_rails=guard_rails or GuardRails(),
        trust=lambda: {r.name: trust_in(store, r.name) for r in recommenders},
        impact_window=impact_window,
    )
    tm = tm_settings(options)
    adoption = Adoption(
        on_bridge=lambda: bridge_vmns(options),
        attach=lambda vmns, both: [(w.vmn, w.port) for w in attach_watched(options, vmns, both)],
        source=service.source,
        ports=by_vmn,  # the health's mirror counters read the same mapping
        tmrset=lambda: service.tmrset,
        set_tmrset=lambda t: setattr(service, "tmrset", t),
        tm=tm,
    )
    # the TMRSet in force changes when an administrator applies or rolls back (other processes): follow it
    watched_now = lambda: [v for v in service.tmrset.vmns if v.name in by_vmn]  # noqa: E731
    follow = FollowInForce(tm, lambda t: setattr(service, "tmrset", t), watched_now)
    service.periodic = (
        Periodic("tm.follow", FOLLOW_EVERY_S, follow),
        Periodic("capture.adopt", ADOPT_EVERY_S, adoption),
        # recommenders that read the whole window (least privilege) run on a schedule, not per batch of findings
        Periodic("recommend.scheduled", SCHEDULED_EVERY_S, service.recommend_scheduled),
        # new indicators reach the running intel.match (with a retro-hunt); TAXII and feed URLs are polled
        *intel_duties(
            store, detectors, intel or IntelSettings(), clock=utc_now, tmrset=lambda: service.tmrset,
            trust=service.trust, on_stored=on_stored,
        ),
    )  # fmt: skip
    return service


MEASURE_EVERY_S = 30.0


def measuring(options: ServiceOptions, *, every_s: float = MEASURE_EVERY_S) -> Periodic:
    """The feedback duty: read the rule counters of the TMRs in force and record what applied proposals did (hits,
    findings that stopped or went on, rollbacks, expiries). The TM side reads the kernel, not the SAE."""
    settings = tm_settings(options)

    def run() -> None:
        with open_enforcer(settings) as enforcer:
            counters = enforcer.counters()  # empty when no vmshadow table is in force
        measure(options.db_url, counters)

    return Periodic("feedback.measure", every_s, run)


def enforce(options: ServiceOptions, tmrset: TMRSet, watched: list[Watched]) -> ApplyResult:
    """Put the TMRs in force on the watched bridge, as a new stored version."""
    settings = tm_settings(options)
    return apply_tmrset(settings, with_watched(tmrset, watched), comment="vmshadow run")


def _snaplen(watched: list[Watched]) -> int:
    """The meters' snap length: the smallest a shadow port asks for (tc copies whole packets; readers cut)."""
    asked = [w.port.snaplen for w in watched if w.port.snaplen]
    return min(asked) if asked else DEFAULT_SNAPLEN


def cleanup(options: ServiceOptions, watched: list[Watched], *, enforced: bool) -> None:
    """Remove the shadow ports this service fed and, if it put TMRs in force, its nftables table."""
    for w in watched:
        shadow_port.detach(w.port)
    if enforced:
        with open_enforcer(tm_settings(options)) as enforcer:
            enforcer.remove()
