"""hunting.port_scan against its simple version (port_scan_reference.py): the same findings and the same snapshots.

The detector and the shared episode code were rewritten for speed and memory (a list instead of a deque for
evidence, the per-key bookkeeping inlined, cheap tests first); the reference is the code as it was. Random flows
with tight caps exercise key and item eviction, expiry, out-of-order times, IPv6 and non-unicast targets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.datadir import shared_data
from tests.unit.analysis.port_scan_reference import ReferencePortScanDetector
from tests.unit.analysis.port_scan_reference import is_unicast as reference_is_unicast
from vmshadow.analysis.hunting.port_scan import PortScanDetector, PortScanSettings
from vmshadow.domain.codec import finding_to_json
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.net import IPAddress, is_unicast
from vmshadow.flows.pcap import PcapSource

T0 = datetime(2026, 1, 1, tzinfo=UTC)

EDGE_ADDRESSES = [
    "0.0.0.0", "0.0.0.1", "1.2.3.4", "223.255.255.255", "224.0.0.0", "224.0.0.251", "239.255.255.255",
    "240.0.0.0", "255.255.255.254", "255.255.255.255", "198.18.0.1",
    "::", "::1", "::ffff:224.0.0.1", "::ffff:255.255.255.255", "fe80::1", "feff:ffff::1", "ff00::", "ff02::fb",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::1", "fe80::1%eth0", "ff02::1%2",
]  # fmt: skip


@pytest.mark.parametrize("text", EDGE_ADDRESSES)
def test_is_unicast_agrees_with_ipaddress(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert is_unicast(address) == reference_is_unicast(address)


def test_is_unicast_agrees_on_random_addresses() -> None:
    rng = random.Random(5)
    for _ in range(20000):
        address: IPAddress = (
            ipaddress.IPv4Address(rng.getrandbits(32))
            if rng.random() < 0.5
            else ipaddress.IPv6Address(rng.getrandbits(128))
        )
        if rng.random() < 0.2:  # push some into the multicast ranges
            address = ipaddress.ip_address(int(address) | (0xE0000000 if address.version == 4 else 0xFF << 120))
        assert is_unicast(address) == reference_is_unicast(address), address


def random_flows(n: int, seed: int) -> Iterator[Flow]:
    """Probes and non-probes from a few dozen sources to a few hosts and ports, times jittered out of order."""
    rng = random.Random(seed)
    sources = [ipaddress.ip_address(f"198.18.{i // 200}.{i % 200 + 1}") for i in range(40)]
    sources += [ipaddress.ip_address(f"2001:db8::{i:x}") for i in range(1, 6)]
    hosts = [ipaddress.ip_address(f"203.0.113.{i}") for i in range(1, 13)]
    hosts += [ipaddress.ip_address(a) for a in ("224.0.0.251", "255.255.255.255", "2001:db8:1::1", "ff02::1")]
    at = T0
    for i in range(n):
        at += timedelta(milliseconds=rng.choice((1, 20, 100, 400, 1500)) if rng.random() < 0.98 else 70000)
        last = at + timedelta(milliseconds=rng.randint(-5000, 2000))  # sometimes before the previous flow
        tcp = rng.random() < 0.7
        probe = rng.random() < 0.85
        protocol = TCP if tcp else UDP
        src = rng.choice(sources[:8] if rng.random() < 0.6 else sources)
        yield Flow(
            id=f"r{i}", community_id=f"1:r{seed}-{i}", src_ip=src,
            src_port=rng.choice((40000 + i % 20000, 53, 443, 1023)), dst_ip=rng.choice(hosts),
            dst_port=rng.choice((rng.randint(1, 1024), rng.randint(1, 65535), 80, 443)), protocol=protocol,
            first_seen_at=last - timedelta(milliseconds=rng.randint(0, 3000)), last_seen_at=last,
            src2dst_packets=rng.randint(1, 4) if probe else rng.randint(1, 40), src2dst_bytes=60,
            dst2src_packets=0 if probe and not tcp else rng.randint(0, 3), dst2src_bytes=0,
            psh_packets=0 if probe else rng.randint(0, 5), syn_packets=1,
        )  # fmt: skip


def both(**settings: Any) -> tuple[PortScanDetector, ReferencePortScanDetector]:
    s = dataclasses.replace(PortScanSettings(), **settings)
    return PortScanDetector(s), ReferencePortScanDetector(s)


def snap(detector: PortScanDetector | ReferencePortScanDetector) -> Any:
    return json.loads(json.dumps(detector.snapshot()))


def same_state(fast: PortScanDetector, reference: ReferencePortScanDetector) -> bool:
    """The per-source episodes are the reference's. Per (source, host) the fast detector starts keeping state only
    when a source has probed two targets (and forgets stale keys only as often as it adds), so that part is checked
    through the findings alone."""
    return bool(snap(fast)["targets"] == snap(reference)["targets"])


def assert_same(flows: list[Flow], **settings: Any) -> int:
    """Feed both detectors, comparing findings flow by flow and state now and then; returns the findings."""
    fast, reference = both(**settings)
    found = 0
    for i, flow in enumerate(flows):
        got = [finding_to_json(f) for f in fast.observe(flow)]
        assert got == [finding_to_json(f) for f in reference.observe(flow)], (i, flow)
        found += len(got)
        if i % 997 == 0:
            assert same_state(fast, reference), i
    assert same_state(fast, reference)
    return found


@pytest.mark.parametrize("seed", range(4))
def test_same_findings_and_state_as_the_reference(seed: int) -> None:
    assert assert_same(list(random_flows(6000, seed)), min_targets=5, min_ports_one_host=4) > 20


@pytest.mark.parametrize("seed", range(3))
def test_same_under_a_tight_target_cap(seed: int) -> None:
    flows = list(random_flows(6000, seed))
    assert assert_same(flows, min_targets=3, min_ports_one_host=2, max_targets=3, window_s=30.0) > 20


@pytest.mark.parametrize("seed", range(3))
def test_a_tight_source_cap_holds_and_keeps_the_per_source_episodes_of_the_reference(seed: int) -> None:
    # Under this cap findings may differ: the reference also spends its (source, host) keys on sources that
    # probed a single target, so it evicts the others sooner.
    fast, reference = both(min_targets=3, min_ports_one_host=2, max_sources=6, max_targets=3, window_s=30.0)
    found = 0
    for i, flow in enumerate(random_flows(6000, seed)):
        found += len(fast.observe(flow))
        reference.observe(flow)
        assert len(fast._targets.episodes) <= 6, i
        assert len(fast._ports_by_host.episodes) <= 6, i
        if i % 997 == 0:
            assert same_state(fast, reference), i
    assert found > 20
    assert same_state(fast, reference)


def test_a_source_with_one_target_holds_no_per_host_state() -> None:
    fast, _ = both()
    src, dst = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("203.0.113.1")
    for i, port in enumerate((22, 22, 80)):
        at = T0 + timedelta(seconds=i)
        fast.observe(Flow(id=f"o{i}", community_id=f"1:o{i}", src_ip=src, src_port=40000 + i, dst_ip=dst,
                          dst_port=port, protocol=TCP, first_seen_at=at, last_seen_at=at, src2dst_packets=1,
                          src2dst_bytes=60, dst2src_packets=0, dst2src_bytes=0, syn_packets=1))  # fmt: skip
        held = {k: list(ep.items) for k, ep in fast._ports_by_host.episodes.items()}
        assert held == ({} if port == 22 else {"198.18.0.1|6|203.0.113.1": ["22", "80"]}), i


def test_a_restored_reference_snapshot_continues_the_same() -> None:
    flows = list(random_flows(4000, 9))
    fast, reference = both(min_targets=5, max_targets=9)
    for flow in flows[:2000]:
        reference.observe(flow)
    fast.restore(snap(reference))
    for flow in flows[2000:]:
        assert [finding_to_json(f) for f in fast.observe(flow)] == [finding_to_json(f) for f in reference.observe(flow)]
    assert same_state(fast, reference)


def test_evidence_keeps_the_latest_fifty() -> None:
    fast, reference = both(min_targets=1000, min_ports_one_host=1000)
    src, dst = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("203.0.113.1")
    for i in range(120):
        at = T0 + timedelta(seconds=i / 10)
        flow = Flow(id=f"e{i}", community_id=f"1:e{i}", src_ip=src, src_port=40000 + i, dst_ip=dst, dst_port=i + 1,
                    protocol=TCP, first_seen_at=at, last_seen_at=at, src2dst_packets=1, src2dst_bytes=60,
                    dst2src_packets=0, dst2src_bytes=0, syn_packets=1)  # fmt: skip
        fast.observe(flow)
        reference.observe(flow)
    state = snap(fast)
    assert same_state(fast, reference)
    assert state["targets"]["episodes"][0][1]["evidence"] == [f"1:e{i}" for i in range(70, 120)]


@pytest.mark.slow
def test_same_on_public_scans() -> None:
    data = shared_data()
    paths = [data / "ndpi/pcap/synscan.pcap", data / "esnet-scanners/nmap_80_all.pcap",
             data / "esnet-scanners/udp_0_1000_20190821.pcap"]  # fmt: skip
    assert assert_same(list(PcapSource(paths))) > 0
