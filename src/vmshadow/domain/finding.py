"""Findings: what a detector concluded, with the flows and measurements that support it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from vmshadow.domain.net import IPAddress


class FindingKind(StrEnum):
    PORT_SCAN = "port_scan"
    BRUTE_FORCE = "brute_force"
    INTEL_MATCH = "intel_match"
    DNS_TUNNEL = "dns_tunnel"
    DGA = "dga"
    BEACONING = "beaconing"
    EXFILTRATION = "exfiltration"
    LATERAL_MOVEMENT = "lateral_movement"
    ANOMALY = "anomaly"


# Finding.measured of DNS findings (tunnel, DGA): the finding's DNS servers that are shared resolvers (asked under
# several parent domains), comma-separated, "" when none. A deny towards one would cut every lookup of the VMN.
SHARED_RESOLVERS = "shared_resolvers"


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def from_score(cls, score: float) -> Severity:
        """Map a score in [0, 1] onto a severity band."""
        if score >= 0.9:
            return cls.CRITICAL
        if score >= 0.7:
            return cls.HIGH
        if score >= 0.4:
            return cls.MEDIUM
        if score >= 0.2:
            return cls.LOW
        return cls.INFO


_RANK = {s: i for i, s in enumerate(Severity)}

Measured = dict[str, float | int | str]


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's conclusion about one offender.

    `src_ip`/`src_vmn` name the offender; `dst_ips`/`dst_ports`/`protocol` the targets it touched.
    `community_ids` are the supporting flows (bounded by the detector). `observed_at` is flow time.
    """

    id: str
    kind: FindingKind
    severity: Severity
    score: float
    detector: str
    detector_version: str
    first_seen_at: datetime
    observed_at: datetime
    src_ip: IPAddress
    protocol: int
    summary: str
    src_vmn: str | None = None
    dst_ips: tuple[IPAddress, ...] = ()
    dst_ports: tuple[int, ...] = ()
    community_ids: tuple[str, ...] = ()
    measured: Measured = field(default_factory=dict, hash=False)
    attack_technique: str | None = None
    indicator: str | None = None  # the matched indicator value, for intel findings

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"finding score must be in [0, 1], got {self.score}")
