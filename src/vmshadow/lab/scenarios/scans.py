"""Port scans with real tools: an nmap SYN scan and an hping3 SYN sweep, attacker VMN -> target VMN."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

from vmshadow.domain.finding import FindingKind
from vmshadow.lab.scenarios.base import Expectation, NamespaceProcesses, Scenario
from vmshadow.lab.state import LabHost

SCAN_TARGET_S = 10.0  # issue 5: scans found within 10 s


@dataclass
class NmapSynScan(Scenario):
    """`nmap -sS` of ports `first_port`..`last_port` on the target, no retries, bounded by nmap's host timeout."""

    attacker: LabHost
    target: LabHost
    first_port: int = 1
    last_port: int = 300
    name: ClassVar[str] = "nmap_syn_scan"
    max_s: float = 60.0

    @property
    def expected(self) -> Expectation:
        return Expectation(FindingKind.PORT_SCAN, self.attacker.name, SCAN_TARGET_S)

    def drive(self, stop: threading.Event) -> None:
        argv = ["nmap", "-sS", "-n", "-Pn", "-p", f"{self.first_port}-{self.last_port}", "-T4", "--max-retries",
                "0", "--host-timeout", f"{int(self.max_s) - 5}s", str(self.target.address.ip)]  # fmt: skip
        with NamespaceProcesses() as procs:
            rc = procs.run(self.attacker.namespace, argv, timeout_s=self.max_s)
        self.outcome = f"nmap exit {rc}"


@dataclass
class HpingSynScan(Scenario):
    """`hping3 -S -p ++first_port -c count`: one SYN per port, each to the next port, at `interval_us` apart."""

    attacker: LabHost
    target: LabHost
    first_port: int = 1000
    count: int = 200
    interval_us: int = 2000
    name: ClassVar[str] = "hping3_syn_scan"
    max_s: float = 30.0

    @property
    def expected(self) -> Expectation:
        return Expectation(FindingKind.PORT_SCAN, self.attacker.name, SCAN_TARGET_S)

    def drive(self, stop: threading.Event) -> None:
        argv = ["hping3", "-q", "-S", "-p", f"++{self.first_port}", "-c", str(self.count), "-i", f"u{self.interval_us}",
                str(self.target.address.ip)]  # fmt: skip
        with NamespaceProcesses() as procs:
            rc = procs.run(self.attacker.namespace, argv, timeout_s=self.max_s)
        self.outcome = f"hping3 exit {rc} after {self.count} SYNs"
