"""The offline path on public captures nobody here wrote: labelled attackers are found and denied; ordinary
traffic gets no deny proposal. Ground truth: ../shared/data/README.md and each set's SOURCE.md."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.datadir import shared_data
from vmshadow.app.offline import AnalysisReport, analyze_captures
from vmshadow.domain.proposal import ProposalKind
from vmshadow.domain.tmr import EndpointKind, TMRSet

NOW = datetime(2026, 11, 25, tzinfo=UTC)

LABELLED = [
    ("ndpi/pcap/synscan.pcap", "172.16.0.8", "port_scan"),
    ("ndpi/pcap/tcp_scan.pcapng", "192.168.1.178", "port_scan"),
    ("esnet-scanners/tcp_0_1000_20190821.pcap", "172.31.15.102", "port_scan"),
    ("esnet-scanners/udp_0_1000_20190821.pcap", "172.31.15.102", "port_scan"),
    ("zeek/traces/nmap-vsn.pcap", "192.168.1.71", "port_scan"),
    ("zeek/traces/ssh/sshguess.pcap", "192.168.56.1", "brute_force"),
    ("zeek/traces/ftp/bruteforce.pcap", "192.168.56.1", "brute_force"),
]

# nDPI captures of attacks or abuse (ndpi/SOURCE.md, "Notable ground truth"); the rest are protocol samples.
NOT_ORDINARY = {
    "synscan.pcap", "tcp_scan.pcapng", "dns-tunnel-iodine.pcap", "bad-dns-traffic.pcap", "dns_exfiltration.pcap",
    "dns-exf.pcap", "dns2tcp_tunnel.pcap", "icmp-tunnel.pcap", "malware.pcap", "emotet.pcap", "trickbot.pcap",
    "mining.pcapng", "monero.pcap", "WebattackRCE.pcap", "WebattackSQLinj.pcap", "sql_injection.pcap", "xss.pcap",
    "log4j-webapp-exploit.pcap", "shell.pcap", "dotenv.pcap", "exe_download.pcap", "exe_download_as_png.pcap",
    "elf.pcap", "portable_executable.pcap", "bot.pcap", "tls_malicious_sha1.pcapng", "dhcp-fuzz.pcapng",
    "crynet.pcap", "tor.pcap",
}  # fmt: skip


def analyze(*paths: Path) -> AnalysisReport:
    return analyze_captures(list(paths), TMRSet(), now=NOW)


@pytest.mark.parametrize(("capture", "attacker", "kind"), LABELLED)
def test_labelled_attacker_is_found_and_a_scoped_deny_proposed(capture: str, attacker: str, kind: str) -> None:
    report = analyze(shared_data() / capture)
    address = ipaddress.ip_address(attacker)
    assert any(f.kind == kind and f.src_ip == address for f in report.findings)
    denies = [p for p in report.proposals if p.kind is ProposalKind.ADD_DENY]
    assert denies, f"no deny proposal for {capture}"
    for p in denies:
        assert p.rule is not None
        assert p.rule.src.kind is EndpointKind.NETWORK
        assert p.rule.src.as_network == ipaddress.ip_network(f"{attacker}/32"), "scoped to the offender only"
        assert p.rule.dst.kind is not EndpointKind.ANY or kind == "port_scan"
        assert p.evidence.finding_ids
        assert p.evidence.community_ids
        flow_ids = {f.community_id for f in report.flows}
        assert set(p.evidence.community_ids) <= flow_ids, "evidence names flows of this capture"
        # the replay blocks the attacker's recorded flows, and only flows from it
        assert p.impact.newly_blocked_flows > 0
        assert p.impact.flows_replayed == len(report.flows)


def test_impact_counts_exactly_the_offenders_flows_to_the_target() -> None:
    report = analyze(shared_data() / "zeek/traces/ssh/sshguess.pcap")
    (deny,) = [p for p in report.proposals if p.kind is ProposalKind.ADD_DENY]
    assert deny.rule is not None
    expected = sum(
        1
        for f in report.flows
        if str(f.src_ip) == "192.168.56.1" and str(f.dst_ip) == "192.168.56.103" and f.dst_port == 22
    )
    assert deny.impact.newly_blocked_flows == expected == 11


def ordinary_captures() -> list[Path]:
    pcaps = sorted((shared_data() / "ndpi/pcap").iterdir())
    return [p for p in pcaps if p.name not in NOT_ORDINARY]


def test_ordinary_traffic_gets_no_deny_proposal() -> None:
    captures = ordinary_captures()
    assert len(captures) >= 60
    denied = {}
    for path in captures:
        report = analyze(path)
        denies = [p.summary for p in report.proposals if p.kind is ProposalKind.ADD_DENY]
        if denies:
            denied[path.name] = denies
    assert denied == {}


def test_a_single_failed_login_is_not_brute_force() -> None:
    report = analyze(shared_data() / "ndpi/pcap/ftp_failed.pcap")
    assert not [f for f in report.findings if f.kind == "brute_force"]
