"""Lateral movement: a VMN reaching a peer, or an administrative port, that it never used while it was learned."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vmshadow.analysis.detector import Detector, DetectorSettings
from vmshadow.analysis.hunting.episodes import EpisodeTracker
from vmshadow.analysis.registry import register
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import IPAddress, address_text, is_unicast

# Remote-service sub-techniques of T1021 by port
_TECHNIQUE = {22: "T1021.004", 3389: "T1021.001", 445: "T1021.002", 139: "T1021.002", 135: "T1021.003",
              5900: "T1021.005", 5985: "T1021.006", 5986: "T1021.006"}  # fmt: skip


@dataclass(slots=True)
class Profile:
    """One VMN's learning window and the (peer, port, protocol) uses it is known for."""

    started_ms: int
    flows: int = 0  # relevant flows seen while learning
    learned: bool = False
    known: OrderedDict[str, int] = field(default_factory=OrderedDict)  # use -> last seen ms, least recent first

    def to_json(self) -> dict[str, Any]:
        return {"started_ms": self.started_ms, "flows": self.flows, "learned": self.learned,
                "known": list(self.known.items())}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Profile:
        p = cls(started_ms=int(d["started_ms"]), flows=int(d["flows"]), learned=bool(d["learned"]))
        p.known = OrderedDict((str(k), int(v)) for k, v in d["known"])
        return p


@dataclass(frozen=True, slots=True)
class LateralMovementSettings(DetectorSettings):
    learning_s: float = 86_400.0  # a VMN's learning window, from its first flow
    min_learning_flows: int = 20  # learning lasts until at least this many relevant flows were seen
    window_s: float = 3600.0  # new uses within this window form one episode
    growth: int = 4  # raise at the first new use, then each time the episode's count grows this much
    admin_ports: tuple[int, ...] = (22, 23, 135, 139, 445, 3389, 5900, 5985, 5986)
    internal_networks: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                          "198.18.0.0/15", "fc00::/7", "fe80::/10")  # fmt: skip
    max_vmns: int = 10_000
    max_uses: int = 4096  # known (peer, port, protocol) uses per VMN, and new ones per episode


@register
class LateralMovementDetector(Detector[LateralMovementSettings]):
    """Detects lateral movement: a VMN reaching a peer or an administrative port it did not use while learning.

    Per VMN (the flow's `src_vmn`, else its source address) the first `learning_s` of flow time, and at least
    `min_learning_flows` relevant flows, are its learning window: every (destination, port, protocol) it
    initiates towards a peer (a destination with a `dst_vmn`, or inside `internal_networks`) or towards any
    of `admin_ports` (SSH, Telnet, RPC, NetBIOS, SMB, RDP, VNC, WinRM) is remembered. After the window, a use
    not remembered is new: new uses within `window_s` form an episode, raised at the first and again each time
    their count grows `growth`-fold, and are then remembered (reported once, not on every flow). Failed
    attempts count after the window: reaching for a service is the signal; while learning, only answered flows
    are learned (and only they start a profile). The score is 0.4 for a new peer on an ordinary port,
    0.5 for an administrative port outside, 0.7 for an administrative port on a peer, plus 0.1 per
    `growth`-fold of new uses. Servers' replies and multicast/broadcast are skipped. A VMN forgotten at
    `max_vmns` learns again (quieter, never noisier).
    Source: first-seen ("never seen during the learning window") hunting as issue 5 specifies; the learned
    uses are a per-VMN allow-list built from its own traffic.
    MITRE ATT&CK T1021 (Remote Services), with the sub-technique when the port names one (e.g. T1021.004 SSH).
    """

    name = "hunting.lateral_movement"
    version = "1.0"
    settings_type = LateralMovementSettings

    def __init__(self, settings: LateralMovementSettings | None = None, context: Any = None) -> None:
        super().__init__(settings, context)
        s = self.settings
        self._learning_ms = int(s.learning_s * 1000)
        # (first, last) as integers per IP version: a membership test per flow, cheaper than ipaddress's `in`
        ranges = [(n.version, int(n.network_address), int(n.broadcast_address))
                  for n in map(ipaddress.ip_network, s.internal_networks)]  # fmt: skip
        self._internal_v4 = tuple((first, last) for version, first, last in ranges if version == 4)
        self._internal_v6 = tuple((first, last) for version, first, last in ranges if version == 6)
        self._admin = frozenset(s.admin_ports)
        self._profiles: OrderedDict[str, Profile] = OrderedDict()  # least recently active first
        self._episodes = self._tracker()

    def _is_peer(self, flow: Flow) -> bool:
        return flow.dst_vmn is not None or self._is_internal(flow.dst_ip)

    def _is_internal(self, address: IPAddress) -> bool:
        value = int(address)
        for first, last in self._internal_v4 if isinstance(address, ipaddress.IPv4Address) else self._internal_v6:
            if first <= value <= last:
                return True
        return False

    def observe(self, flow: Flow) -> list[Finding]:
        if flow.protocol not in (TCP, UDP) or flow.src_port < 1024 <= flow.dst_port:
            return []  # not a service, or a server's side of a conversation
        admin = flow.dst_port in self._admin
        peer = self._is_peer(flow)
        if not (admin or peer):
            return []
        key = flow.src_vmn or address_text(flow.src_ip)
        profile = self._profiles.get(key)
        if profile is None and not flow.answered:
            return []  # (the test below, before the flow time is read: a spoofed flood is all this)
        at_ms = int(flow.last_seen_at.timestamp() * 1000)
        if profile is not None:
            self._end_learning(profile, at_ms)
        if (profile is None or not profile.learned) and not flow.answered:
            return []  # an unanswered attempt teaches nothing (and a spoofed flood must not fill the table)
        if not is_unicast(flow.dst_ip) or flow.dst_ip == flow.src_ip:  # after the cheap tests: microseconds
            return []
        profile = self._profile(key, at_ms)
        use = f"{address_text(flow.dst_ip)}|{flow.dst_port}|{flow.protocol}"
        if not profile.learned:
            profile.flows += 1
            self._end_learning(profile, at_ms)
        if not profile.learned or use in profile.known:
            self._remember(profile, use, at_ms)
            return []
        self._remember(profile, use, at_ms)  # reported once; the episode counts it
        episode, reached = self._episodes.add(key, use, at_ms, flow.community_id)
        if not reached:
            return []
        return [self._finding(flow, key, profile, episode.items, episode.evidence, episode.started_ms, admin, peer)]

    def _end_learning(self, profile: Profile, at_ms: int) -> None:
        if not profile.learned and profile.flows >= self.settings.min_learning_flows:
            profile.learned = at_ms >= profile.started_ms + self._learning_ms

    def _profile(self, key: str, at_ms: int) -> Profile:
        profile = self._profiles.get(key)
        if profile is None:
            profile = self._profiles[key] = Profile(started_ms=at_ms)
            if len(self._profiles) > self.settings.max_vmns:
                self._profiles.popitem(last=False)
        else:
            self._profiles.move_to_end(key)
            profile.started_ms = min(profile.started_ms, at_ms) if not profile.learned else profile.started_ms
        return profile

    def _remember(self, profile: Profile, use: str, at_ms: int) -> None:
        profile.known[use] = max(at_ms, profile.known.pop(use, at_ms))
        if len(profile.known) > self.settings.max_uses:
            profile.known.popitem(last=False)

    def _finding(
        self, flow: Flow, key: str, profile: Profile, uses: dict[str, int], evidence: tuple[str, ...], started_ms: int,
        admin: bool, peer: bool,
    ) -> Finding:  # fmt: skip
        s = self.settings
        n = len(uses)
        base = 0.7 if admin and peer else 0.5 if admin else 0.4
        score = min(1.0, base + 0.1 * math.log(n, s.growth)) if s.growth > 1 else base
        parsed = [u.split("|") for u in uses]
        dsts = tuple(dict.fromkeys(ipaddress.ip_address(p[0]) for p in parsed))
        ports = tuple(sorted({int(p[1]) for p in parsed}))
        admin_uses = sum(1 for p in parsed if int(p[1]) in self._admin)
        technique = _TECHNIQUE.get(ports[0], "T1021") if len(ports) == 1 else "T1021"
        what = "administrative port" if admin else "peer"
        return Finding(
            id=stable_id("find", self.name, key, started_ms, n),
            kind=FindingKind.LATERAL_MOVEMENT,
            severity=Severity.from_score(score),
            score=round(score, 4),
            detector=self.name,
            detector_version=self.version,
            first_seen_at=datetime.fromtimestamp(started_ms / 1000, tz=UTC),
            observed_at=flow.last_seen_at,
            src_ip=flow.src_ip,
            src_vmn=flow.src_vmn,
            protocol=flow.protocol,
            dst_ips=dsts[:64],
            dst_ports=ports[:64],
            community_ids=tuple(evidence),
            measured={
                "new_uses": n,
                "new_admin_uses": admin_uses,
                "new_peers": len(dsts),
                "known_uses": len(profile.known),
                "learning_s": s.learning_s,
                "window_s": s.window_s,
            },
            attack_technique=technique,
            summary=(
                f"{key} reached {n} (peer, port) use(s) it never used while learned, the latest a new {what}: "
                f"{flow.dst_ip}:{flow.dst_port}"
            ),
        )

    def snapshot(self) -> dict[str, Any]:
        return {"profiles": [[k, p.to_json()] for k, p in self._profiles.items()],
                "episodes": self._episodes.snapshot()}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        profiles = OrderedDict((str(k), Profile.from_json(v)) for k, v in state["profiles"])
        episodes = self._tracker()
        episodes.restore(state["episodes"])
        self._profiles, self._episodes = profiles, episodes  # only once all of it was read

    def _tracker(self) -> EpisodeTracker:
        s = self.settings
        return EpisodeTracker(window_s=s.window_s, threshold=1, growth=s.growth, max_keys=s.max_vmns,
                              max_items=s.max_uses)  # fmt: skip
