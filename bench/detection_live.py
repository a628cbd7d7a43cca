"""Live lab scenarios: real attack tools against lab VMNs, the real SAE on the shadow ports, honest timings.

Live part of the evaluation harness (issue 5, 5b). A tagged lab (unique names, removed in `finally`, also on
Ctrl-C) with the outside services (dnsmasq resolver, HTTP on the web and C2 hosts, sshd in vm2); the embedded
service reads every VMN's shadow port with every registered detector (default settings) and recommender and
stores into a throw-away SQLite store. First the benign mix runs on every VMN (`--benign-minutes`), then each attack
scenario in turn. Per attack: detected or not (a finding of the expected kind naming the attacker VMN), seconds
from the scenario's start (its first packet) to the first such finding and to the first proposal citing it,
and whether that proposal is a deny scoped to the attacker or an alert. Per benign run: deny proposals, those
whose impact blocks a recorded (benign) flow, and proposals (alerts or denies) per VMN-hour.

Targets (issue 5): scans and brute force within 10 s, other attacks within 60 s; benign: no blocking deny, at most
1 alert per VMN-hour. Meters run at SCHED_IDLE: on a loaded machine they fall behind; the load average is printed.

Run from the repository root, as root, under the kernel lock:
  flock /tmp/vms-kernel.lock .venv/bin/python -m bench.detection_live [--benign-minutes 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from tests.integration.labkit import tagged_lab

from vmshadow.adapters.sql import open_store
from vmshadow.adapters.sql.store import SqlStore
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.registry import build_detectors
from vmshadow.app.embedded import EmbeddedService
from vmshadow.domain.flow import Flow
from vmshadow.domain.proposal import Proposal, ProposalKind
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.flows.live import LiveSource, MeteredPort
from vmshadow.lab.scenarios import (
    BenignMix,
    BulkUpload,
    CurlBeacon,
    HpingSynScan,
    HydraSSH,
    IodineTunnel,
    LabServices,
    NmapSynScan,
    Scenario,
    outside_host,
)
from vmshadow.lab.scenarios.verdict import created_between, offender_findings, proposals_for, scoped_to
from vmshadow.lab.state import LabHost, LabState
from vmshadow.refinement.recommender import recommender_types

POLL_S = 0.2
AFTER_DRIVE_S = 20.0  # flows expire 2 s after their last packet; findings and proposals follow within a flush
SETTLE_S = 5.0  # between scenarios: the previous one's flows drain
ATTACKS = ("nmap", "hping3", "hydra", "iodine", "beacon", "exfil")


def metered(host: LabHost) -> MeteredPort:
    assert host.shadow_interface is not None
    return MeteredPort(host.name, "vmsr-" + host.shadow_interface.removeprefix("vmss-"), host.shadow_interface)


def load() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass
class LiveSAE:
    """A lab with the SAE reading its shadow ports, and the store it writes."""

    lab: LabState
    store: SqlStore
    service: EmbeddedService

    def socket_drops(self) -> int:
        return sum(h.socket_dropped + h.queue_dropped for h in self.service.source.health.values())


@contextmanager
def live_sae(work_dir: Path, n_vmns: int, *, letter: str = "s") -> Iterator[LiveSAE]:
    """A tagged lab and the embedded service on it (every detector and recommender, default settings, an
    allow-everything TMRSet); everything stopped and removed on exit."""
    with tagged_lab(work_dir / "lab", n_vmns, letter=letter) as lab:
        store = open_store(f"sqlite:///{work_dir / 'scenarios.db'}")
        allow_all = TMR("allow-all", 1000, Endpoint.any(), Endpoint.any(), Action.ALLOW)
        service = EmbeddedService(
            source=LiveSource([metered(h) for h in lab.vmns], lab.vmn_map()),
            store=store,
            tmrset=TMRSet(tmrs=(allow_all,), vmns=tuple(h.vmn() for h in lab.vmns)),
            detectors=build_detectors(DetectorContext()),
            recommenders=[cls() for cls in recommender_types().values()],
            status_path=work_dir / "status.json",
        )
        stop = threading.Event()
        runner = threading.Thread(target=service.run, args=(stop,), name="sae", daemon=True)
        runner.start()
        try:
            deadline = time.monotonic() + 20
            while not all(h.heartbeats >= 1 and h.processed >= 1 for h in service.source.health.values()):
                if time.monotonic() > deadline or not runner.is_alive():
                    raise RuntimeError(f"meters not running: {service.source.health}")
                time.sleep(POLL_S)
            yield LiveSAE(lab, store, service)
        finally:
            stop.set()
            runner.join(timeout=30)
            store.close()


@dataclass
class AttackResult:
    scenario: str
    kind: str
    offender: str
    target_s: float
    detected: bool = False
    finding_s: float | None = None
    proposal_s: float | None = None
    proposal: str = "none"  # "deny (attacker)", "deny (wider)", "alert", "none"
    proposal_summary: str = ""
    deny_s: float | None = None  # first deny scoped to the attacker, when the first proposal was something else
    drive_s: float = 0.0
    other_kinds: list[str] = field(default_factory=list)  # other findings naming the attacker meanwhile
    load_before: float = 0.0
    load_after: float = 0.0
    drops: int = 0
    outcome: str = ""  # what the attack traffic achieved (the scenario's own report)
    seen: str = ""  # on a miss: the attacker's flows the SAE stored meanwhile, so a miss can be explained

    @property
    def met(self) -> bool:
        return self.detected and self.finding_s is not None and self.finding_s <= self.target_s

    def row(self) -> str:
        def s(v: float | None) -> str:
            return "—" if v is None else f"{v:.1f}"

        verdict = "**yes**" if self.met else ("late" if self.detected else "**no**")
        return (
            f"| {self.scenario} | {self.kind} | {self.offender} | {'yes' if self.detected else 'no'} | "
            f"{s(self.finding_s)} | {s(self.proposal_s)} | {self.proposal} | {s(self.deny_s)} | "
            f"{self.target_s:.0f} | {verdict} | {', '.join(self.other_kinds) or '—'} | "
            f"{self.load_before}/{self.load_after} | {self.outcome} |"
        )


def run_attack(sae: LiveSAE, scenario: Scenario, offender: LabHost, log: Callable[[str], None]) -> AttackResult:
    """Run one attack scenario and watch the store until its finding and a proposal arrive, or the scenario
    ended `AFTER_DRIVE_S` ago (bounded by the scenario's own `max_s`)."""
    expected = scenario.expected
    assert expected is not None
    result = AttackResult(scenario.name, str(expected.kind), offender.name, expected.target_s, load_before=load())
    drops_before = sae.socket_drops()
    with scenario.prepared():
        stop = threading.Event()
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        driver = threading.Thread(target=scenario.drive, args=(stop,), name=scenario.name, daemon=True)
        driver.start()
        ended: float | None = None
        cap = t0 + scenario.max_s + AFTER_DRIVE_S
        try:
            while time.monotonic() < cap:
                now = time.monotonic() - t0
                if ended is None and not driver.is_alive():
                    ended = now
                    result.drive_s = round(ended, 1)
                    log(f"  {scenario.name}: traffic done after {ended:.1f} s")
                found = offender_findings(
                    sae.store.findings(since=started_at - timedelta(seconds=1)), expected.kind, offender
                )
                if found and result.finding_s is None:
                    result.detected, result.finding_s = True, round(now, 1)
                    log(f"  {scenario.name}: {expected.kind} finding against {offender.name} after {now:.1f} s")
                proposals = proposals_for(sae.store.proposals(), found) if found else []
                if proposals and result.proposal_s is None:
                    first = min(proposals, key=lambda p: p.created_at)
                    result.proposal_s = round(now, 1)
                    result.proposal = _describe(first, offender)
                    result.proposal_summary = first.summary[:600]
                    log(f"  {scenario.name}: proposal after {now:.1f} s: {result.proposal}")
                if result.deny_s is None and any(scoped_to(p, offender) for p in proposals):
                    result.deny_s = round(now, 1)
                answered = result.deny_s is not None or (result.proposal_s is not None and not expected.deny)
                if answered and ended is not None:  # the traffic runs to its end: its outcome is reported
                    break
                if ended is not None and now > ended + AFTER_DRIVE_S:
                    break
                time.sleep(POLL_S)
        finally:
            stop.set()
            driver.join(timeout=scenario.max_s)
    if result.drive_s == 0.0:
        result.drive_s = round(time.monotonic() - t0, 1)
    mine = [f for f in sae.store.findings(since=started_at) if f.src_vmn == offender.name]
    result.outcome = scenario.outcome
    result.other_kinds = sorted({str(f.kind) for f in mine} - {str(expected.kind)})
    result.load_after = load()
    result.drops = sae.socket_drops() - drops_before
    if not result.detected:
        result.seen = seen_from(sae.store.flows(since=started_at - timedelta(seconds=1), vmn=offender.name), offender)
    return result


def seen_from(flows: Sequence[Flow], offender: LabHost) -> str:
    """The attacker's flows in a few words: how many, their applications, packets sent and names."""
    mine = [f for f in flows if f.src_vmn == offender.name]
    apps = Counter(f.application or "?" for f in mine)
    names = Counter(f.host_name for f in mine if f.host_name)
    packets = sum(f.src2dst_packets for f in mine)
    return (
        f"{len(mine)} flows from {offender.name}, {packets} packets sent; applications {dict(apps.most_common(5))}; "
        f"names {dict(names.most_common(3))}"
    )[:400]


def _describe(proposal: Proposal, offender: LabHost) -> str:
    if proposal.kind is ProposalKind.ALERT:
        return "alert"
    if proposal.kind is ProposalKind.ADD_DENY:
        return "deny (attacker)" if scoped_to(proposal, offender) else "deny (wider)"
    return str(proposal.kind)


@dataclass
class BenignResult:
    minutes: float
    vmns: int
    flows: int = 0
    findings: dict[str, int] = field(default_factory=dict)  # by kind
    alerts: int = 0
    denies: int = 0
    blocking_denies: int = 0  # denies that would block at least one flow the benign clients sent
    proposals_per_vmn_hour: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    drops: int = 0
    summaries: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.blocking_denies == 0 and self.proposals_per_vmn_hour <= 1.0


def blocks_any(tmrset: TMRSet, proposal: Proposal, flows: Sequence[Flow]) -> bool:
    """Whether the proposal is a deny that would block at least one of `flows` that the TMRSet allows now."""
    rule = proposal.rule
    if proposal.kind is not ProposalKind.ADD_DENY or rule is None:
        return False
    after = tmrset.with_tmr(rule)
    return any(
        after.evaluate(f, f.last_seen_at).action is Action.DENY
        and tmrset.evaluate(f, f.last_seen_at).action is Action.ALLOW
        for f in flows
    )


def run_benign(
    sae: LiveSAE,
    services: LabServices,
    minutes: float,
    log: Callable[[str], None],
    clients: Sequence[LabHost] | None = None,
) -> BenignResult:
    """The benign mix on `clients` (every VMN by default). A deny blocks a benign flow when it denies one of the
    flows the clients sent during the mix (replayed through the TMRSet with the deny added)."""
    clients = tuple(clients or sae.lab.vmns)
    names = {c.name for c in clients}
    mix = BenignMix(services, clients, duration_s=minutes * 60)
    result = BenignResult(minutes, len(clients), load_before=load())
    drops_before = sae.socket_drops()
    started_at = datetime.now(UTC)
    stop = threading.Event()
    driver = threading.Thread(target=mix.drive, args=(stop,), name=mix.name, daemon=True)
    driver.start()
    try:
        while driver.is_alive():
            driver.join(timeout=60)
            log(f"  benign: {(datetime.now(UTC) - started_at).total_seconds():.0f} s, load {load()}")
    finally:
        stop.set()
        driver.join(timeout=mix.max_s)
    time.sleep(AFTER_DRIVE_S / 2)  # the last flows expire and are analysed
    ended_at = datetime.now(UTC)
    findings = [f for f in sae.store.findings(since=started_at) if f.observed_at <= ended_at]
    proposals = created_between(sae.store.proposals(), started_at, ended_at)
    result.flows = sum(1 for _ in sae.store.flows(since=started_at))
    result.findings = dict(Counter(str(f.kind) for f in findings))
    result.alerts = sum(1 for p in proposals if p.kind is ProposalKind.ALERT)
    result.denies = sum(1 for p in proposals if p.kind is ProposalKind.ADD_DENY)
    benign_flows = [f for f in sae.store.flows(since=started_at, until=ended_at) if f.src_vmn in names]
    result.blocking_denies = sum(1 for p in proposals if blocks_any(sae.service.tmrset, p, benign_flows))
    result.proposals_per_vmn_hour = round(len(proposals) / (len(clients) * minutes / 60), 2)
    result.summaries = [f"{p.kind}: {p.summary}"[:200] for p in proposals]
    result.load_after = load()
    result.drops = sae.socket_drops() - drops_before
    return result


def attacks(lab: LabState, services: LabServices, names: list[str]) -> list[tuple[Scenario, LabHost]]:
    """The attack scenarios in order. Attackers alternate between vm1 and the last VMN, so that two scenarios of
    one kind never share an attacker (a detector's episode from the first would swallow the second)."""
    vm1, vm2, vmx = lab.vmns[0], lab.vmns[1], lab.vmns[-1]
    c2, dns = outside_host(lab, "c2"), outside_host(lab, "dns")
    every: dict[str, tuple[Scenario, LabHost]] = {
        "nmap": (NmapSynScan(vm1, vm2), vm1),
        "hping3": (HpingSynScan(vmx, vm2), vmx),
        "hydra": (HydraSSH(vm1, services.ssh_target), vm1),
        "iodine": (IodineTunnel(vmx, dns), vmx),
        "beacon": (CurlBeacon(vm1, c2), vm1),
        "exfil": (BulkUpload(vmx, c2), vmx),
    }
    return [every[n] for n in names]


def markdown(results: list[AttackResult], benign: BenignResult | None) -> str:
    lines = [
        "| scenario | expected kind | attacker | detected | finding s | proposal s | first proposal | scoped deny s "
        "| target s | within target | other kinds on attacker | load 1-min before/after | traffic |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[r.row() for r in results],
    ]
    if benign is not None:
        b = benign
        lines += [
            "",
            f"Benign mix: {b.minutes:g} min on {b.vmns} VMNs ({b.vmns * b.minutes / 60:.2f} VMN-hours), "
            f"{b.flows} flows; "
            f"findings {b.findings or 'none'}; alerts {b.alerts}, denies {b.denies} (blocking a benign flow: "
            f"{b.blocking_denies}); proposals per VMN-hour {b.proposals_per_vmn_hour}; load {b.load_before}/"
            f"{b.load_after}; shadow copies dropped {b.drops}.",
            *[f"- {s}" for s in b.summaries],
        ]
    return "\n".join(lines)


def _interrupt_in(main_pid: int) -> Callable[[int, FrameType | None], None]:
    """SIGTERM tears the lab down like Ctrl-C, in this process only: a child forked by a library (pyroute2 forks to
    reach namespaces) inherits the handler and must just end, never run our teardown a second time."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        raise KeyboardInterrupt

    return handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.detection_live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vmns", type=int, default=3, help="VMNs in the lab (at least 2; default 3)")
    parser.add_argument("--benign-minutes", type=float, default=10.0, help="benign mix length (0 skips it)")
    parser.add_argument("--scenarios", nargs="*", choices=ATTACKS, default=list(ATTACKS), help="attacks to run")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.vmns < 2:
        parser.error("--vmns must be at least 2")
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, shadow ports)")
    signal.signal(signal.SIGTERM, _interrupt_in(os.getpid()))

    def log(text: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)

    started = datetime.now(UTC)
    log(f"bench.detection_live on {os.cpu_count()} CPUs, load {os.getloadavg()}")
    results: list[AttackResult] = []
    benign: BenignResult | None = None
    with tempfile.TemporaryDirectory(prefix="vms-live-") as d, live_sae(Path(d), args.vmns) as sae:
        log(f"lab {sae.lab.tag} on {sae.lab.bridge} up, meters running")
        with LabServices(sae.lab, sae.lab.vmns[1]) as services:
            if args.benign_minutes > 0:
                log(f"benign mix: {args.benign_minutes:g} min on {len(sae.lab.vmns)} VMNs")
                benign = run_benign(sae, services, args.benign_minutes, log)
                log(f"benign: {benign}")
            for scenario, offender in attacks(sae.lab, services, args.scenarios):
                time.sleep(SETTLE_S)
                log(f"{scenario.name}: {offender.name} (expect {scenario.expected})")
                results.append(run_attack(sae, scenario, offender, log))
                log(f"  -> {results[-1]}")
    print()
    print(f"date {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
    print(markdown(results, benign))
    if args.json:
        args.json.write_text(json.dumps({
            "date": started.isoformat(), "attacks": [asdict(r) for r in results],
            "benign": asdict(benign) if benign else None,
        }, indent=2))  # fmt: skip
    met = all(r.met for r in results) and (benign is None or benign.met)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
