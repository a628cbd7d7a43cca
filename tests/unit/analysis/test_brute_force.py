"""hunting.brute_force: login attempts counted per new client connection, SSH password rounds estimated.

The flows imitate what the live lab measured (docs/scenarios.md): shadow ports copy what a VMN sends, so a client's
flow has no packets back (dst2src 0) and the server VMN's copy of the same connection is a separate flow from port
22; the live meter cuts an interactive session at each keystroke pause into pieces without a SYN.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.factories import at, make_flow
from vmshadow.analysis.hunting.brute_force import BruteForceDetector, BruteForceSettings, attempts_in
from vmshadow.domain.finding import Finding, FindingKind
from vmshadow.domain.flow import Flow

CLIENT = ipaddress.ip_address("198.18.0.11")
SERVER = ipaddress.ip_address("198.18.0.12")


def ssh(n: int, start_s: float, *, psh: int = 12, syn: int = 1, server: bool = False, **kw: Any) -> Flow:
    """One direction of an SSH connection as a shadow port sees it (client side unless `server`)."""
    port = 41000 + n
    ends = (SERVER, 22, CLIENT, port) if server else (CLIENT, port, SERVER, 22)
    values: dict[str, Any] = {
        "src_ip": ends[0], "src_port": ends[1], "dst_ip": ends[2], "dst_port": ends[3],
        "first_seen_at": at(start_s), "last_seen_at": at(start_s + 0.14), "src2dst_packets": 17,
        "src2dst_bytes": 2737, "dst2src_packets": 0, "dst2src_bytes": 0, "syn_packets": syn, "psh_packets": psh,
        "application": "SSH", "application_is_guessed": False, "src_vmn": "vm2" if server else "vm1",
    }  # fmt: skip
    values.update(kw)
    return make_flow(n, **values)


def run(flows: list[Flow], settings: BruteForceSettings | None = None) -> list[Finding]:
    detector = BruteForceDetector(settings)
    return [f for flow in flows for f in detector.observe(flow)]


def test_hydra_round_of_connections_is_found_on_its_first_round() -> None:
    # hydra -t 4 against sshd, measured: a method probe (7 client data segments), then 4 parallel connections
    # of ~5 guesses each (12 segments), ~0.14 s long; the next round only 5 s later.
    flows = [ssh(0, 0.26, psh=7)] + [ssh(i, 0.6 + 0.01 * i) for i in range(1, 5)]
    found = run(flows)
    assert [f.kind for f in found] == [FindingKind.BRUTE_FORCE]
    assert found[0].src_ip == CLIENT
    assert found[0].dst_ports == (22,)
    assert found[0].measured["connections"] == 4
    assert int(found[0].measured["attempts"]) >= 8


def test_an_interactive_session_cut_into_pieces_is_one_login() -> None:
    # One SSH connection with keystroke pauses over the meter's idle timeout: 30 pieces, only the first has a SYN;
    # the server VMN's shadow port gives the same pieces from port 22 (its first with the SYN-ACK).
    flows: list[Flow] = []
    for i in range(30):
        start = 3.0 * i
        syn = 1 if i == 0 else 0
        flows.append(ssh(0, start, psh=13 if i == 0 else 2, syn=syn, id=f"c{i}"))
        flows.append(ssh(0, start, psh=13 if i == 0 else 1, syn=syn, server=True, id=f"s{i}"))
    assert run(flows) == []


def test_servers_replies_are_not_attempts() -> None:
    flows = [ssh(i, 0.5 * i, server=True) for i in range(20)]
    assert run(flows) == []


def test_one_connection_is_not_guessing_however_many_rounds() -> None:
    # Three sessions with many data segments each (e.g. short commands with key login): below min_connections.
    assert run([ssh(i, 10.0 * i, psh=40) for i in range(3)]) == []


def test_other_services_count_one_attempt_per_connection() -> None:
    def ftp(n: int) -> Flow:
        return make_flow(n, dst_ip=SERVER, dst_port=21, application="FTP_CONTROL", psh_packets=7,
                         first_seen_at=at(2 * n), last_seen_at=at(2 * n + 2))  # fmt: skip

    assert run([ftp(i) for i in range(7)]) == []
    found = run([ftp(i) for i in range(8)])
    assert [f.measured["attempts"] for f in found] == [8]


def test_ssh_rounds_are_estimated_from_the_clients_data_segments() -> None:
    assert attempts_in(ssh(0, 0, psh=7)) == 1  # hydra's method probe
    assert attempts_in(ssh(0, 0, psh=12)) == 5  # a hydra connection
    assert attempts_in(ssh(0, 0, psh=60)) == 6  # at most sshd's MaxAuthTries
    both_ways = ssh(0, 0, psh=17, dst2src_packets=15)  # zeek's sshguess.pcap: 17 PSH segments, both directions
    assert attempts_in(both_ways) == 1
    assert attempts_in(make_flow(0, dst_port=21, psh_packets=30)) == 1


def test_the_threshold_waits_for_enough_connections_then_raises_once() -> None:
    # Two big connections reach 8 estimated attempts, but the finding waits for the 4th connection.
    flows = [ssh(i, 1.0 * i, psh=13) for i in range(6)]
    detector = BruteForceDetector()
    raised_at = [i for i, flow in enumerate(flows) if detector.observe(flow)]
    assert raised_at == [3]
