"""Port scan detection from flows."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vmshadow.analysis.detector import Detector, DetectorSettings
from vmshadow.analysis.hunting.episodes import EpisodeTracker
from vmshadow.analysis.registry import register
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import address_text, is_unicast


@dataclass(frozen=True, slots=True)
class PortScanSettings(DetectorSettings):
    window_s: float = 60.0
    min_targets: int = 10  # distinct (host, port) probed in the window
    min_ports_one_host: int = 6  # distinct ports probed on a single host in the window
    growth: int = 4  # raise again each time the count grows this much
    max_sources: int = 50_000
    max_targets: int = 4096


def is_probe(flow: Flow) -> bool:
    """A connection attempt that exchanged no application data.

    TCP: no PSH in either direction (SYN/no answer, SYN+RST, SYN/SYN-ACK/RST, ACK probe, connect-then-reset).
    UDP: a few datagrams with no answer. Multicast/broadcast targets and flows that look like a server's
    one-way replies (well-known source port to an ephemeral port) are not probes.
    """
    if flow.src_port < 1024 <= flow.dst_port:
        return False
    if flow.protocol == TCP:
        probe = flow.psh_packets == 0 and flow.packets <= 6
    elif flow.protocol == UDP:
        probe = not flow.answered and flow.src2dst_packets <= 3
    else:
        return False
    return probe and is_unicast(flow.dst_ip)  # the address test last: it is the dearest


_PORT_TEXT: dict[int, str] = {}  # one string per port number, shared by every episode that holds it


def _port_text(port: int) -> str:
    text = _PORT_TEXT.get(port)
    if text is None:
        text = _PORT_TEXT[port] = str(port)
    return text


@register
class PortScanDetector(Detector[PortScanSettings]):
    """Detects TCP and UDP port scans, vertical (many ports on one host) and horizontal (many hosts).

    A source that, within `window_s` of flow time, probes at least `min_targets` distinct (host, port) targets,
    or `min_ports_one_host` distinct ports on one host, is reported. A probe is a flow with no application data
    (see `is_probe`). TCP and UDP are tracked apart, so a finding names one protocol. Score: 0.6 at the
    threshold rising to 1.0 at 16 times it (UDP scores 0.9 of that: silence is weaker evidence than a reset).
    MITRE ATT&CK T1046 (Network Service Discovery). Thresholds follow the usual flow-based scan heuristics
    (e.g. Zeek's scan.zeek, Jung et al., "Fast Portscan Detection Using Sequential Hypothesis Testing", 2004).
    """

    name = "hunting.port_scan"
    version = "1.0"
    settings_type = PortScanSettings

    def __init__(self, settings: PortScanSettings | None = None, context: Any = None) -> None:
        super().__init__(settings, context)
        s = self.settings
        self._targets = EpisodeTracker(
            window_s=s.window_s, threshold=s.min_targets, growth=s.growth,
            max_keys=s.max_sources, max_items=s.max_targets,
        )  # fmt: skip
        self._ports_by_host = EpisodeTracker(
            window_s=s.window_s, threshold=s.min_ports_one_host, growth=s.growth,
            max_keys=s.max_sources, max_items=s.max_targets,
        )  # fmt: skip

    def observe(self, flow: Flow) -> list[Finding]:
        if not is_probe(flow):
            return []
        at_ms = int(flow.last_seen_at.timestamp() * 1000)
        key = f"{address_text(flow.src_ip)}|{flow.protocol}"
        dst = address_text(flow.dst_ip)
        cid = flow.community_id
        target = f"{dst}|{flow.dst_port}"
        ep, reached = self._targets.add(key, target, at_ms, cid)
        reached_vertical = False
        items = ep.items
        host_key = f"{key}|{dst}"
        # Ports per host are counted once a source has probed two targets (the first is filled in then): most
        # sources of a spoofed flood probe one, and no per-host episode for them saves this detector a third of its
        # time and half its memory there. A source whose per-host episode outlived its own goes on being counted.
        if len(items) > 1 or host_key in self._ports_by_host.episodes:
            if len(items) == 2:
                self._fill_in(key, target, items)
            _, reached_vertical = self._ports_by_host.add(host_key, _port_text(flow.dst_port), at_ms, cid)
        if not (reached or reached_vertical):
            return []
        return [self._finding(flow, ep.items, ep.started_ms, list(ep.evidence))]

    def _fill_in(self, key: str, target: str, items: dict[str, int]) -> None:
        """Count the source's other target(s) per host, at the time each was last probed, unless counted already."""
        for other, seen_ms in items.items():
            if other == target:
                continue
            host, _, port = other.rpartition("|")
            host_key = f"{key}|{host}"
            held = self._ports_by_host.episodes.get(host_key)
            if held is None or port not in held.items:
                self._ports_by_host.add(host_key, port, seen_ms, "")  # per-host evidence is never reported

    def _finding(self, flow: Flow, items: dict[str, int], started_ms: int, evidence: list[str]) -> Finding:
        hosts: dict[str, set[int]] = {}
        for target in items:
            host, _, port = target.rpartition("|")
            hosts.setdefault(host, set()).add(int(port))
        ports = sorted({p for ps in hosts.values() for p in ps})
        widest = max(len(ps) for ps in hosts.values())
        s = self.settings
        strength = max(len(items) / s.min_targets, widest / s.min_ports_one_host)
        score = min(1.0, 0.6 + 0.4 * math.log2(max(strength, 1.0)) / 4.0)
        if flow.protocol == UDP:
            score *= 0.9
        shape = "vertical" if len(hosts) == 1 else ("horizontal" if widest <= 2 else "mixed")
        proto = "tcp" if flow.protocol == TCP else "udp"
        return Finding(
            id=stable_id("find", self.name, flow.src_ip, flow.protocol, started_ms, len(items), widest),
            kind=FindingKind.PORT_SCAN,
            severity=Severity.from_score(score),
            score=score,
            detector=self.name,
            detector_version=self.version,
            first_seen_at=datetime.fromtimestamp(started_ms / 1000, tz=UTC),
            observed_at=flow.last_seen_at,
            src_ip=flow.src_ip,
            src_vmn=flow.src_vmn,
            protocol=flow.protocol,
            dst_ips=tuple(sorted((ipaddress.ip_address(h) for h in hosts), key=str)[:32]),
            dst_ports=tuple(ports[:64]),
            community_ids=tuple(evidence),
            measured={
                "targets": len(items),
                "hosts": len(hosts),
                "ports": len(ports),
                "max_ports_one_host": widest,
                "window_s": s.window_s,
                "shape": shape,
            },
            attack_technique="T1046",
            summary=(
                f"{flow.src_ip} probed {len(items)} {proto} targets ({len(ports)} ports on {len(hosts)} hosts, "
                f"{shape}) within {s.window_s:g}s"
            ),
        )

    def snapshot(self) -> dict[str, Any]:
        return {"targets": self._targets.snapshot(), "ports_by_host": self._ports_by_host.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self._targets.restore(state["targets"])
        self._ports_by_host.restore(state["ports_by_host"])
