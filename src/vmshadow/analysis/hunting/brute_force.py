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
from vmshadow.domain.flow import TCP, Flow
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


# SSH: data segments a client sends before its first password (banner, KEXINIT, key exchange, NEWKEYS, service
# request, the "none" method); each later one is about one password round. Measured on the lab's hydra (12 client
# data segments for ~5 guesses, 7 for its method probe) and zeek's sshguess.pcap (8-10 per connection).
SSH_SETUP_SEGMENTS = 7
MAX_GUESSES_PER_CONNECTION = 6  # OpenSSH's default MaxAuthTries


@dataclass(frozen=True, slots=True)
class BruteForceSettings(DetectorSettings):
    window_s: float = 120.0
    min_attempts: int = 8  # login attempts (estimated, see `attempts_in`) to one service in the window
    min_connections: int = 4  # ... spread over at least this many connections (one session is not guessing)
    max_session_s: float = 60.0  # longer sessions are someone working, not guessing
    max_session_packets: int = 200
    growth: int = 4
    max_keys: int = 50_000
    max_attempts_kept: int = 4096


def auth_service(flow: Flow) -> bool:
    return flow.dst_port in AUTH_PORTS or flow.application.split(".", 1)[0] in AUTH_APPLICATIONS


def server_side(flow: Flow) -> bool:
    """Whether the flow is the server's side (replies from the service port to the client's port): seen when the
    server is a VMN, whose shadow port copies what it sends."""
    if flow.src_port in AUTH_PORTS:
        return flow.dst_port not in AUTH_PORTS or flow.src_port < flow.dst_port
    return flow.dst_port not in AUTH_PORTS and flow.src_port < flow.dst_port  # matched by label: the lower port


def is_attempt(flow: Flow, s: BruteForceSettings) -> bool:
    """A new, short connection to an authentication service that exchanged data (a probe without data is a scan).

    A TCP flow without a SYN is the continuation of a connection the flow meter cut at an idle pause (the live
    meter cuts an interactive session at each keystroke pause over its idle timeout): it is not a new login."""
    return (
        auth_service(flow)
        and not server_side(flow)
        and (flow.protocol != TCP or flow.syn_packets > 0)
        and flow.carried_data
        and flow.duration_s <= s.max_session_s
        and flow.packets <= s.max_session_packets
    )


def attempts_in(flow: Flow) -> int:
    """Estimated login attempts in one connection: 1, except SSH, where a client may try up to MaxAuthTries
    passwords per connection: its data segments after the key exchange, one per password round (a flow seen in
    both directions holds about as many server segments as client ones, so half its PSH count is the client's)."""
    ssh = flow.dst_port == 22 or flow.application.split(".", 1)[0] == "SSH"
    if not ssh:
        return 1
    client_segments = flow.psh_packets if flow.dst2src_packets == 0 else flow.psh_packets // 2
    return max(1, min(MAX_GUESSES_PER_CONNECTION, client_segments - SSH_SETUP_SEGMENTS))


@register
class BruteForceDetector(Detector[BruteForceSettings]):
    """Detects password guessing: many short login sessions from one source to one authentication service.

    Services: SSH, FTP, Telnet, RDP, VNC, mail and database logins (by port or nDPI label; Kerberos, LDAP and
    SMB are left out, see AUTH_PORTS). A connection counts when it is new (a TCP flow with a SYN: the pieces the
    flow meter cuts from one long session at idle pauses do not), is the client's side (servers' replies are
    skipped), exchanged data and lasted at most `max_session_s` with at most `max_session_packets` packets. It
    counts as one login attempt, an SSH connection as its estimated password rounds (`attempts_in`: hydra
    tries several passwords per connection, up to sshd's MaxAuthTries). `min_attempts` attempts over at least
    `min_connections` connections to one (host, port) within `window_s` of flow time raise a finding, again at
    each `growth`-fold milestone. Score 0.6 at the threshold, 1.0 at 16 times it.
    MITRE ATT&CK T1110 (Brute Force).
    Follows the flow heuristics of Zeek's detect-bruteforcing.zeek and ftp/detect-bruteforcing.zeek.
    """

    name = "hunting.brute_force"
    version = "1.1"
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
        ep, reached = self._attempts.add(key, flow.id, at_ms, flow.community_id, weight=attempts_in(flow))
        if not reached:
            return []
        s = self.settings
        attempts = len(ep.items)
        connections = sum(1 for item in ep.items if "#" not in item)  # weighted items are `id#n` (episodes.py)
        if connections < s.min_connections:
            ep.next_milestone = attempts + 1  # judge again at the next connection
            return []
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
                measured={"attempts": attempts, "connections": connections, "window_s": s.window_s, "service": service},
                attack_technique="T1110",
                summary=(
                    f"{flow.src_ip} made ~{attempts} {service} login attempts in {connections} short sessions to "
                    f"{flow.dst_ip}:{flow.dst_port} within {s.window_s:g}s"
                ),
            )
        ]

    def snapshot(self) -> dict[str, Any]:
        return {"attempts": self._attempts.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self._attempts.restore(state["attempts"])
