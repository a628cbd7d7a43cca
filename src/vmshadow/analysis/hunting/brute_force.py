"""Brute-force detection against authentication services, from flows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vmshadow.analysis.detector import Detector, DetectorSettings
from vmshadow.analysis.hunting.episodes import EpisodeTracker
from vmshadow.analysis.registry import register
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id

# Services where a login is a short session; by port and by nDPI label (services on other ports).
# Kerberos, LDAP and SMB are left out on purpose: domain members open many short sessions to them all the time
# (nDPI's benign kerberos.pcap has 24 Kerberos exchanges in 30 s), so counting sessions cannot tell a password
# spray from a logon; that needs the protocol's error codes (docs/detection.md).
AUTH_PORTS: frozenset[int] = frozenset({21, 22, 23, 110, 143, 993, 995, 1433, 3306, 3389, 5432, 5900, 5901})
AUTH_APPLICATIONS: frozenset[str] = frozenset(
    {"SSH", "FTP_CONTROL", "Telnet", "RDP", "VNC", "IMAP", "POP3", "MySQL", "PostgreSQL", "MsSQL-TDS", "IMAPS",
     "POPS"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BruteForceSettings(DetectorSettings):
    window_s: float = 120.0
    min_attempts: int = 8  # login-like sessions to one service in the window
    max_session_s: float = 60.0  # longer sessions are someone working, not guessing
    max_session_packets: int = 200
    growth: int = 4
    max_keys: int = 50_000
    max_attempts_kept: int = 4096


def auth_service(flow: Flow) -> bool:
    return flow.dst_port in AUTH_PORTS or flow.application.split(".", 1)[0] in AUTH_APPLICATIONS


def is_attempt(flow: Flow, s: BruteForceSettings) -> bool:
    """A short session to an authentication service that exchanged data (a probe without data is a scan)."""
    return (
        auth_service(flow)
        and flow.carried_data
        and flow.duration_s <= s.max_session_s
        and flow.packets <= s.max_session_packets
    )


@register
class BruteForceDetector(Detector[BruteForceSettings]):
    """Detects password guessing: many short sessions from one source to one authentication service.

    Services: SSH, FTP, Telnet, RDP, VNC, mail and database logins (by port or nDPI label; Kerberos, LDAP and
    SMB are left out, see AUTH_PORTS). A session counts when it exchanged data and lasted at most
    `max_session_s` with at most `max_session_packets` packets; `min_attempts` of them to one (host, port)
    within `window_s` of flow time raise a finding. Score 0.6 at the threshold, 1.0 at 16 times it.
    MITRE ATT&CK T1110 (Brute Force).
    Follows the flow heuristics of Zeek's detect-bruteforcing.zeek and ftp/detect-bruteforcing.zeek.
    """

    name = "hunting.brute_force"
    version = "1.0"
    settings_type = BruteForceSettings

    def __init__(self, settings: BruteForceSettings | None = None, context: Any = None) -> None:
        super().__init__(settings, context)
        s = self.settings
        self._attempts = EpisodeTracker(
            window_s=s.window_s, threshold=s.min_attempts, growth=s.growth,
            max_keys=s.max_keys, max_items=s.max_attempts_kept,
        )  # fmt: skip

    def observe(self, flow: Flow) -> list[Finding]:
        if not is_attempt(flow, self.settings):
            return []
        at_ms = int(flow.last_seen_at.timestamp() * 1000)
        key = f"{flow.src_ip}|{flow.dst_ip}|{flow.protocol}|{flow.dst_port}"
        ep, reached = self._attempts.add(key, flow.id, at_ms, flow.community_id)
        if not reached:
            return []
        s = self.settings
        attempts = len(ep.items)
        score = min(1.0, 0.6 + 0.4 * math.log2(attempts / s.min_attempts) / 4.0)
        service = flow.application.split(".", 1)[0] if not flow.application_is_guessed else ""
        service = service if service and service != "Unknown" else f"port {flow.dst_port}"
        return [
            Finding(
                id=stable_id("find", self.name, key, ep.started_ms, attempts),
                kind=FindingKind.BRUTE_FORCE,
                severity=Severity.from_score(score),
                score=score,
                detector=self.name,
                detector_version=self.version,
                first_seen_at=datetime.fromtimestamp(ep.started_ms / 1000, tz=UTC),
                observed_at=flow.last_seen_at,
                src_ip=flow.src_ip,
                src_vmn=flow.src_vmn,
                protocol=flow.protocol,
                dst_ips=(flow.dst_ip,),
                dst_ports=(flow.dst_port,),
                community_ids=tuple(ep.evidence),
                measured={"attempts": attempts, "window_s": s.window_s, "service": service},
                attack_technique="T1110",
                summary=(
                    f"{flow.src_ip} made {attempts} short {service} sessions to {flow.dst_ip}:{flow.dst_port} "
                    f"within {s.window_s:g}s"
                ),
            )
        ]

    def snapshot(self) -> dict[str, Any]:
        return {"attempts": self._attempts.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self._attempts.restore(state["attempts"])
