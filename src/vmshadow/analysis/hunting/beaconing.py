"""Beaconing detection (periodic command-and-control check-ins) from flows, scored as RITA does."""

from __future__ import annotations

import ipaddress
import itertools
import statistics
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vmshadow.analysis.detector import Detector, DetectorSettings
from vmshadow.analysis.hunting.episodes import MAX_EVIDENCE, RecentByKey
from vmshadow.analysis.registry import register
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import is_unicast


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Q1, median and Q3 (inclusive method) of at least two values."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def bowley_skewness(q1: float, q2: float, q3: float) -> float:
    """Quartile skewness in [-1, 1]; 0 for a symmetric (or degenerate) distribution.

    >>> bowley_skewness(1.0, 2.0, 3.0)
    0.0
    >>> bowley_skewness(1.0, 1.0, 3.0)
    1.0
    """
    spread = q3 - q1
    return 0.0 if spread <= 0 else (q3 + q1 - 2 * q2) / spread


def median_absolute_deviation(values: list[float], median: float) -> float:
    return statistics.median(abs(v - median) for v in values)


@dataclass(frozen=True, slots=True)
class BeaconScore:
    """RITA's beacon score parts; `score` is their mean and `interval_score` the mean of the timing parts."""

    connections: int
    interval_s: float  # median time between connection starts
    interval_skew: float
    interval_mad_s: float
    interval_regularity: float  # 1 - MAD / (jitter_tolerance x median interval), at least 0
    in_tolerance: float  # share of intervals within jitter_tolerance x median of the median
    span_s: float
    size_bytes: float  # median source-to-destination bytes
    size_skew: float
    size_mad_bytes: float
    interval_score: float
    size_score: float
    score: float


def beacon_score(
    starts_ms: list[int], sizes: list[int], *, jitter_tolerance: float, size_tolerance_bytes: float,
    full_duration_s: float, full_intervals: int = 0,
) -> BeaconScore:  # fmt: skip
    """Score connection start times and sizes (at least three connections) as RITA's beacon analysis does:
    timing = mean of (1 - |Bowley skewness| of the intervals, 1 - MAD / (jitter_tolerance x median interval),
    duration coverage); size = mean of (1 - |Bowley skewness| of the sizes, 1 - MAD / size_tolerance_bytes,
    smallness 1 - median / 65535); score = mean of all six parts. A skewness is damped by the share of its
    tolerance (jitter_tolerance x median, size_tolerance_bytes) that the interquartile range spans.

    Duration coverage is RITA's span / `full_duration_s`, or, when `full_intervals` is set and it is higher, the
    number of intervals / `full_intervals`: a fast beacon shows as many check-ins in a minute as a slow one in
    hours, and RITA's part alone (made for a day of logs) would hold it down for minutes."""
    starts = sorted(starts_ms)
    intervals = [(b - a) / 1000 for a, b in itertools.pairwise(starts)]
    q1, q2, q3 = quartiles(intervals) if len(intervals) >= 2 else (intervals[0],) * 3
    # Skewness of a spread inside the tolerance is noise (a 30 s +/- 1 s beacon has an arbitrary sign of skew):
    # damp it by how much of the tolerance the interquartile range uses; RITA gets the same from whole seconds.
    interval_skew = bowley_skewness(q1, q2, q3) * min(1.0, (q3 - q1) / (jitter_tolerance * q2)) if q2 > 0 else 0.0
    interval_mad = median_absolute_deviation(intervals, q2)
    tolerance = jitter_tolerance * q2
    interval_mad_score = max(0.0, 1.0 - interval_mad / tolerance) if tolerance > 0 else 0.0
    span_s = (starts[-1] - starts[0]) / 1000
    duration_score = min(1.0, max(span_s / full_duration_s, len(intervals) / full_intervals if full_intervals else 0))
    s1, s2, s3 = quartiles([float(s) for s in sizes])
    size_skew = bowley_skewness(s1, s2, s3) * min(1.0, (s3 - s1) / size_tolerance_bytes)
    size_mad = median_absolute_deviation([float(s) for s in sizes], s2)
    size_mad_score = max(0.0, 1.0 - size_mad / size_tolerance_bytes)
    smallness = 1.0 - min(1.0, s2 / 65535)
    timing = [1.0 - abs(interval_skew), interval_mad_score, duration_score]
    size = [1.0 - abs(size_skew), size_mad_score, smallness]
    return BeaconScore(
        connections=len(starts),
        interval_s=q2,
        interval_skew=interval_skew,
        interval_mad_s=interval_mad,
        interval_regularity=interval_mad_score,
        in_tolerance=sum(1 for d in intervals if abs(d - q2) <= tolerance) / len(intervals),
        span_s=span_s,
        size_bytes=s2,
        size_skew=size_skew,
        size_mad_bytes=size_mad,
        interval_score=sum(timing) / 3,
        size_score=sum(size) / 3,
        score=(sum(timing) + sum(size)) / 6,
    )


# (source, destination, protocol, destination port), the addresses as integers, and a 6 after them for IPv6: a
# tuple of integers costs a third of a text key per flow (the addresses' texts are made only for a snapshot)
ConversationKey = tuple[int, ...]


def conversation_key(flow: Flow) -> ConversationKey:
    key = (int(flow.src_ip), int(flow.dst_ip), flow.protocol, flow.dst_port)
    return key if type(flow.src_ip) is ipaddress.IPv4Address else (*key, 6)


def key_text(key: ConversationKey) -> str:
    """A key as snapshots hold it: "source|destination|protocol|port"."""
    src, dst, protocol, port, *v6 = key
    address = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    return f"{address(src)}|{address(dst)}|{protocol}|{port}"


def key_from_text(text: str) -> ConversationKey:
    src_text, dst_text, protocol, port = text.split("|")
    src, dst = ipaddress.ip_address(src_text), ipaddress.ip_address(dst_text)
    key = (int(src), int(dst), int(protocol), int(port))
    return key if src.version == 4 else (*key, 6)


@dataclass(slots=True)
class Conversation:
    """Connections from one source to one service within the window."""

    started_ms: int
    latest_ms: int = 0
    # (start ms, src2dst bytes, community_id) in arrival order; a tuple, not a list or deque: most conversations
    # hold one or two connections (one per spoofed source in a flood), and a tuple of these costs the least memory
    # and is not revisited by the cyclic garbage collector (a list is, at every full collection)
    connections: tuple[tuple[int, int, str], ...] = ()
    next_milestone: int = 0  # connections needed before the next finding
    next_evaluation: int = 0  # connections needed before scoring again

    def to_json(self) -> dict[str, Any]:
        return {
            "started_ms": self.started_ms,
            "latest_ms": self.latest_ms,
            "connections": [list(c) for c in self.connections],
            "next_milestone": self.next_milestone,
            "next_evaluation": self.next_evaluation,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Conversation:
        conv = cls(
            started_ms=int(d["started_ms"]),
            latest_ms=int(d["latest_ms"]),
            next_milestone=int(d["next_milestone"]),
            next_evaluation=int(d["next_evaluation"]),
        )
        conv.connections = tuple((int(s), int(b), str(c)) for s, b, c in d["connections"])
        return conv


@dataclass(frozen=True, slots=True)
class BeaconingSettings(DetectorSettings):
    window_s: float = 3600.0
    min_connections: int = 8  # 6 let 2 % of Poisson-random conversations through (docs/detection.md)
    min_duration_s: float = 60.0  # connections must span at least this long (a burst is not a beacon) ...
    fast_min_connections: int = 10  # ... unless there are at least this many (a fast beacon: seconds apart) ...
    fast_min_duration_s: float = 30.0  # ... spanning at least this long
    full_duration_s: float = 300.0  # spans this long or longer get the full duration score ...
    full_intervals: int = 12  # ... and so do this many intervals (0: by span only, as RITA)
    min_score: float = 0.75  # RITA-style score (mean of timing and size parts)
    min_interval_score: float = 0.7  # timing parts alone: keeps regular sizes from carrying irregular timing
    min_regularity: float = 0.5  # the interval-MAD part alone: MAD at most half the tolerated jitter
    min_in_tolerance: float = 0.9  # share of intervals within the tolerated jitter (a few missed check-ins pass)
    jitter_tolerance: float = 0.5  # interval MAD as a share of the median interval at which regularity scores 0
    size_tolerance_bytes: float = 32.0  # size MAD at which size regularity scores 0 (RITA's cut-off)
    ignored_ports: tuple[int, ...] = (53, 123)  # DNS and NTP clients are periodic by design
    growth: int = 4  # raise again each time the connection count grows this much
    max_keys: int = 50_000
    max_connections: int = 256  # per (source, destination, port, protocol)


def _expire_connections(conv: Conversation, horizon_ms: int) -> bool:
    """Drop connections that started before the horizon; True when none is left."""
    kept = conv.connections
    first = 0
    while first < len(kept) and kept[first][0] < horizon_ms:
        first += 1
    if first:
        conv.connections = kept = kept[first:]
    return not kept


@register
class BeaconingDetector(Detector[BeaconingSettings]):
    """Detects beaconing: a source connecting to one service at regular intervals with regular sizes.

    Per (source, destination, destination port, protocol) the start times and source-to-destination bytes of
    the connections within `window_s` of flow time are kept (at most `max_connections`). With at least
    `min_connections` spanning at least `min_duration_s` (or, for a fast beacon, `fast_min_connections` spanning
    `fast_min_duration_s`), they are scored as RITA's beacon analysis does (activecm/rita, `pkg/beacon`: Bowley
    skewness and median absolute deviation of the inter-arrival times and of the data sizes, a duration part and
    a data-smallness part, averaged; the duration part is full at `full_duration_s` or at `full_intervals`
    intervals, whichever comes first, so a beacon every few seconds is judged within a minute): regular intervals
    score high when the intervals' MAD is small against `jitter_tolerance` x the median interval, so jittered beacons
    (e.g. 30 s +/- 20 %) still score well while Poisson-like human traffic does not; sizes score high when their
    MAD is below `size_tolerance_bytes`. A finding is raised when the score reaches `min_score`, the timing
    parts alone reach `min_interval_score`, the interval-MAD part reaches `min_regularity` and at least
    `min_in_tolerance` of the intervals lie within the tolerated jitter of the median (these gates keep regular
    sizes from carrying irregular timing, and small random samples from passing), and again each time the
    connection count grows `growth`-fold.
    Multicast/broadcast destinations, `ignored_ports` and servers' replies are skipped. One long-lived
    connection (a kept-alive session) is a single flow and cannot be scored: beacons are seen only when the
    implant opens a connection (or the flow meter cuts a flow) per check-in.
    MITRE ATT&CK T1071 (Application Layer Protocol), T1573 (Encrypted Channel) for TLS/QUIC/443.
    """

    name = "hunting.beaconing"
    version = "1.1"
    settings_type = BeaconingSettings

    def __init__(self, settings: BeaconingSettings | None = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self._window_ms = int(self.settings.window_s * 1000)
        self._recent: RecentByKey[ConversationKey, Conversation] = RecentByKey(
            window_ms=self._window_ms, max_keys=self.settings.max_keys
        )

    def observe(self, flow: Flow) -> list[Finding]:
        s = self.settings
        if flow.protocol not in (TCP, UDP) or not is_unicast(flow.dst_ip) or flow.dst_port in s.ignored_ports:
            return []
        if flow.src_port < 1024 <= flow.dst_port:
            return []  # a server's side of a conversation
        start_ms = int(flow.first_seen_at.timestamp() * 1000)
        at_ms = int(flow.last_seen_at.timestamp() * 1000)
        conv = self._conversation(conversation_key(flow), start_ms, at_ms)
        connections = (*conv.connections, (start_ms, flow.src2dst_bytes, flow.community_id))
        if len(connections) > s.max_connections:
            connections = connections[1:]
        conv.connections = connections
        n = len(connections)
        if n < max(conv.next_milestone, conv.next_evaluation):
            return []
        conv.next_evaluation = n + max(1, n // 8)  # scoring is O(n log n): amortise it on busy conversations
        starts = [c[0] for c in conv.connections]
        span_s = (max(starts) - min(starts)) / 1000
        if span_s < s.min_duration_s and (n < s.fast_min_connections or span_s < s.fast_min_duration_s):
            return []
        result = beacon_score(
            starts, [c[1] for c in conv.connections], jitter_tolerance=s.jitter_tolerance,
            size_tolerance_bytes=s.size_tolerance_bytes, full_duration_s=s.full_duration_s,
            full_intervals=s.full_intervals,
        )  # fmt: skip
        if (
            result.score < s.min_score
            or result.interval_score < s.min_interval_score
            or result.interval_regularity < s.min_regularity
            or result.in_tolerance < s.min_in_tolerance
        ):
            return []
        conv.next_milestone = n * s.growth
        return [self._finding(flow, conv, result)]

    def _conversation(self, key: ConversationKey, start_ms: int, at_ms: int) -> Conversation:
        recent = self._recent
        conv = recent.live(key, start_ms, _expire_connections, now_ms=at_ms)
        if conv is None:  # most flows of a flood start a conversation: built here, with no closure to pass
            return recent.start(key, Conversation(start_ms, start_ms, (), self.settings.min_connections))
        conv.latest_ms = max(conv.latest_ms, start_ms)
        conv.started_ms = min(conv.started_ms, start_ms)
        return conv

    def _finding(self, flow: Flow, conv: Conversation, r: BeaconScore) -> Finding:
        app = flow.application.split(".", 1)[0] if not flow.application_is_guessed else ""
        encrypted = app in ("TLS", "QUIC", "DTLS") or flow.dst_port == 443
        proto = "tcp" if flow.protocol == TCP else "udp"
        return Finding(
            id=stable_id(
                "find",
                self.name,
                flow.src_ip,
                flow.dst_ip,
                flow.protocol,
                flow.dst_port,
                conv.started_ms,
                r.connections,
            ),
            kind=FindingKind.BEACONING,
            severity=Severity.from_score(r.score),
            score=round(min(1.0, r.score), 4),
            detector=self.name,
            detector_version=self.version,
            first_seen_at=datetime.fromtimestamp(conv.started_ms / 1000, tz=UTC),
            observed_at=flow.last_seen_at,
            src_ip=flow.src_ip,
            src_vmn=flow.src_vmn,
            protocol=flow.protocol,
            dst_ips=(flow.dst_ip,),
            dst_ports=(flow.dst_port,),
            community_ids=tuple(c[2] for c in conv.connections[-MAX_EVIDENCE:]),
            measured={
                "connections": r.connections,
                "interval_s": round(r.interval_s, 3),
                "interval_skew": round(r.interval_skew, 4),
                "interval_mad_s": round(r.interval_mad_s, 3),
                "in_tolerance": round(r.in_tolerance, 3),
                "span_s": round(r.span_s, 3),
                "size_bytes": round(r.size_bytes, 1),
                "size_skew": round(r.size_skew, 4),
                "size_mad_bytes": round(r.size_mad_bytes, 1),
                "interval_score": round(r.interval_score, 4),
                "size_score": round(r.size_score, 4),
                "window_s": self.settings.window_s,
            },
            attack_technique="T1573" if encrypted else "T1071",
            summary=(
                f"{flow.src_ip} connected to {flow.dst_ip}:{flow.dst_port}/{proto} {r.connections} times every "
                f"{r.interval_s:.1f}s (MAD {r.interval_mad_s:.1f}s, ~{r.size_bytes:.0f} bytes each) over "
                f"{r.span_s:.0f}s"
            ),
        )

    def snapshot(self) -> dict[str, Any]:
        return {"conversations": [[key_text(k), c.to_json()] for k, c in self._recent.items.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        self._recent.items = OrderedDict(
            (key_from_text(str(k)), Conversation.from_json(v)) for k, v in state["conversations"]
        )
