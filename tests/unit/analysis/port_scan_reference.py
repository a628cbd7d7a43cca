"""The port-scan detector as it was before it was rewritten for speed (commit 2dda9ff), kept as a differential
oracle: tests/unit/analysis/test_port_scan.py checks that `hunting.port_scan` gives the same findings and the same
snapshots as this simple version. Not registered; do not optimise it."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from vmshadow.analysis.detector import Detector
from vmshadow.analysis.hunting.port_scan import PortScanSettings
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.ids import stable_id

MAX_EVIDENCE = 50


def is_unicast(address: Any) -> bool:
    """`vmshadow.domain.net.is_unicast` as it was (ipaddress's properties)."""
    if address.is_multicast or address.is_unspecified:
        return False
    return not (isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"))


@dataclass(slots=True)
class Episode:
    started_ms: int
    items: OrderedDict[str, int] = field(default_factory=OrderedDict)  # item -> last seen, ms, oldest first
    next_milestone: int = 0
    evidence: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_EVIDENCE))
    latest_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "started_ms": self.started_ms,
            "items": list(self.items.items()),
            "next_milestone": self.next_milestone,
            "evidence": list(self.evidence),
            "latest_ms": self.latest_ms,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Episode:
        ep = cls(started_ms=int(d["started_ms"]), next_milestone=int(d["next_milestone"]))
        ep.items = OrderedDict((str(k), int(v)) for k, v in d["items"])
        ep.evidence.extend(d["evidence"])
        ep.latest_ms = int(d["latest_ms"])
        return ep


class Timed(Protocol):
    started_ms: int
    latest_ms: int


T = TypeVar("T", bound=Timed)


class RecentByKey(Generic[T]):
    """Per-key state that follows activity, not history: least recently touched first, at most `max_keys` keys,
    and keys gone quiet for a window forgotten as new flows arrive (two per call keeps it O(1)); without that a
    spoofed flood would fill the table up to `max_keys`. Shared by every hunting detector that keeps state per key.
    """

    def __init__(self, *, window_ms: int, max_keys: int) -> None:
        self.window_ms = window_ms
        self.max_keys = max_keys
        self.items: OrderedDict[str, T] = OrderedDict()

    def touch(
        self,
        key: str,
        at_ms: int,
        fresh: Callable[[], T],
        expire: Callable[[T, int], bool],
        *,
        now_ms: int | None = None,
    ) -> T:
        """The state of `key`, touched at `at_ms` (`now_ms`, default `at_ms`, ages out other keys).

        `expire(state, horizon_ms)` drops what is older than the window and says whether nothing is left, in
        which case `fresh()` starts the key over.
        """
        self._forget_stale(at_ms if now_ms is None else now_ms)
        state = self.items.get(key)
        if state is not None:
            self.items.move_to_end(key)
            if expire(state, max(state.latest_ms, at_ms) - self.window_ms):
                state = None
        if state is None:
            state = fresh()
            self.items[key] = state
            if len(self.items) > self.max_keys:
                self.items.popitem(last=False)
        state.latest_ms = max(state.latest_ms, at_ms)
        state.started_ms = min(state.started_ms, at_ms)
        return state

    def _forget_stale(self, now_ms: int) -> None:
        for _ in range(2):
            if not self.items:
                return
            oldest = next(iter(self.items))
            if self.items[oldest].latest_ms >= now_ms - self.window_ms:
                return
            del self.items[oldest]


class EpisodeTracker:
    """Per-key windowed item sets with bounded memory (keys and items are capped, oldest evicted)."""

    def __init__(self, *, window_s: float, threshold: int, growth: int, max_keys: int, max_items: int) -> None:
        self.window_ms = int(window_s * 1000)
        self.threshold = threshold
        self.growth = growth
        self.max_keys = max_keys
        self.max_items = max_items
        self._recent: RecentByKey[Episode] = RecentByKey(window_ms=self.window_ms, max_keys=max_keys)

    @property
    def episodes(self) -> OrderedDict[str, Episode]:
        return self._recent.items

    def add(self, key: str, item: str, at_ms: int, evidence: str, *, weight: int = 1) -> tuple[Episode, bool]:
        """Record `item` for `key` at flow time `at_ms`; return the episode and whether a milestone was reached.

        An item of `weight` n counts n times (it is kept as `item`, `item#1`, ... `item#n-1`): e.g. a connection
        that carried several login attempts."""
        ep = self._recent.touch(
            key, at_ms, lambda: Episode(started_ms=at_ms, next_milestone=self.threshold), self._expire
        )
        for i in range(max(1, weight)):
            part = item if i == 0 else f"{item}#{i}"
            previous = ep.items.pop(part, None)
            ep.items[part] = max(at_ms, previous or at_ms)
            if len(ep.items) > self.max_items:
                ep.items.popitem(last=False)
        ep.evidence.append(evidence)
        reached = len(ep.items) >= ep.next_milestone
        if reached:
            ep.next_milestone = max(ep.next_milestone, len(ep.items)) * self.growth
        return ep, reached

    @staticmethod
    def _expire(ep: Episode, horizon: int) -> bool:
        # Items are appended in arrival order, so the oldest are in front: O(1) amortised per flow. A late
        # (out-of-order) flow sits behind newer items and ages out a little late, never early.
        while ep.items:
            first_key, first_seen = next(iter(ep.items.items()))
            if first_seen >= horizon:
                break
            del ep.items[first_key]
        return not ep.items

    def snapshot(self) -> dict[str, Any]:
        return {"episodes": [[k, ep.to_json()] for k, ep in self.episodes.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self._recent.items = OrderedDict((str(k), Episode.from_json(v)) for k, v in state["episodes"])


def is_probe(flow: Flow) -> bool:
    """A connection attempt that exchanged no application data.

    TCP: no PSH in either direction (SYN/no answer, SYN+RST, SYN/SYN-ACK/RST, ACK probe, connect-then-reset).
    UDP: a few datagrams with no answer. Multicast/broadcast targets and flows that look like a server's
    one-way replies (well-known source port to an ephemeral port) are not probes.
    """
    if not is_unicast(flow.dst_ip):
        return False
    if flow.src_port < 1024 <= flow.dst_port:
        return False
    if flow.protocol == TCP:
        return flow.psh_packets == 0 and flow.packets <= 6
    if flow.protocol == UDP:
        return not flow.answered and flow.src2dst_packets <= 3
    return False


class ReferencePortScanDetector(Detector[PortScanSettings]):
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
        key = f"{flow.src_ip}|{flow.protocol}"
        target = f"{flow.dst_ip}|{flow.dst_port}"
        ep, reached = self._targets.add(key, target, at_ms, flow.community_id)
        _, reached_vertical = self._ports_by_host.add(
            f"{key}|{flow.dst_ip}", str(flow.dst_port), at_ms, flow.community_id
        )
        if not (reached or reached_vertical):
            return []
        return [self._finding(flow, ep.items, ep.started_ms, list(ep.evidence))]

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
