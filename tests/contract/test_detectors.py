"""The detector conformance suite: every registered detector must pass all of it.

A new detector inherits these tests by registering itself; nothing here names a particular detector.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.datadir import shared_data
from vmshadow.analysis.detector import Detector, DetectorContext, DetectorSettings
from vmshadow.analysis.registry import detector_types
from vmshadow.domain.codec import finding_to_json
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.flows.pcap import PcapSource

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONTEXT = DetectorContext(
    indicators=(
        Indicator(IndicatorType.CIDR, "203.0.113.0/24", source="conformance", confidence=80),
        Indicator(IndicatorType.IPV4, "64.13.134.52", source="conformance", confidence=90),
        Indicator(IndicatorType.DOMAIN, "evil.example", source="conformance", confidence=70),
    )
)
NAMES = sorted(detector_types())


def synthetic(n: int, *, start: int = 0, dpi: bool = True) -> Iterator[Flow]:
    """A mix every detector finds interesting: probes, login-like sessions, listed destinations; with
    distinct sources so that per-key state keeps growing unless it is capped."""
    for i in range(start, start + n):
        kind = i % 4
        src = ipaddress.ip_address(0xC6120000 + (i // 8) % 60000)  # 198.18.x.y, 8 flows per source
        dst = ipaddress.ip_address(f"203.0.113.{i % 250}") if kind == 3 else ipaddress.ip_address("198.19.0.1")
        at = T0 + timedelta(milliseconds=100 * i)
        probe = kind in (0, 1)
        yield Flow(
            id=f"f{i}",
            community_id=f"1:{i}",
            src_ip=src,
            src_port=40000 + i % 20000,
            dst_ip=dst,
            dst_port=(i % 1024) if probe else 22,
            protocol=UDP if kind == 1 else TCP,
            first_seen_at=at,
            last_seen_at=at + timedelta(seconds=0 if probe else 3),
            src2dst_packets=1 if probe else 20,
            src2dst_bytes=60 if probe else 3000,
            dst2src_packets=0 if probe else 18,
            dst2src_bytes=0 if probe else 4000,
            psh_packets=0 if probe else 8,
            syn_packets=1,
            application=("SSH" if kind == 2 else "TLS") if dpi else "",
            sni="c2.evil.example" if dpi and kind == 3 else "",
        )


def beacons(n: int) -> Iterator[Flow]:
    """A check-in every 30 s (+/- 2 s) to one service; no public capture here holds a beacon of separate flows."""
    for i in range(n):
        at = T0 + timedelta(seconds=30 * i + (i * 7919) % 5 - 2)
        yield Flow(
            id=f"b{i}", community_id=f"1:b{i}", src_ip=ipaddress.ip_address("198.51.100.7"), src_port=50000 + i,
            dst_ip=ipaddress.ip_address("203.0.113.80"), dst_port=443, protocol=TCP, first_seen_at=at,
            last_seen_at=at + timedelta(seconds=1), src2dst_packets=6, src2dst_bytes=740, dst2src_packets=5,
            dst2src_bytes=1900, psh_packets=2, syn_packets=1,
        )  # fmt: skip


VMN_A = ipaddress.ip_address("198.18.5.10")


def vmn_story() -> Iterator[Flow]:
    """A VMN's ordinary day (HTTPS to four servers, DNS to its resolver) for 27 h, then the unusual: SSH, SMB and
    RDP towards peers it never used, and a 48 MB upload to a host it never met. Baselines and learning windows
    need a history of one VMN; the captures here have no VMN names and are too short."""
    common = {"src_ip": VMN_A, "src_vmn": "vmn-a", "syn_packets": 1}
    n = 0
    for n in range(800):
        at = T0 + timedelta(seconds=120 * n + (n * 7919) % 60)
        dns = n % 10 == 9
        dst, port = ("198.18.5.1", 53) if dns else (f"192.0.2.{1 + n % 4}", 443)
        yield Flow(
            id=f"v{n}", community_id=f"1:v{n}", src_port=40000 + n, dst_ip=ipaddress.ip_address(dst), dst_port=port,
            protocol=UDP if dns else TCP, first_seen_at=at, last_seen_at=at + timedelta(seconds=0 if dns else 2),
            src2dst_packets=1 if dns else 8, src2dst_bytes=80 if dns else 1500 + (n * 131) % 3000,
            dst2src_packets=1 if dns else 10, dst2src_bytes=200 if dns else 20000 + (n * 977) % 40000,
            psh_packets=0 if dns else 3, **common,
        )  # fmt: skip
    later = T0 + timedelta(seconds=120 * n + 600)
    for i, (dst, port, peer) in enumerate([("198.18.5.20", 22, "vmn-b"), ("198.18.5.21", 445, None),
                                           ("198.18.5.22", 3389, None)]):  # fmt: skip
        at = later + timedelta(seconds=5 * i)
        yield Flow(
            id=f"l{i}", community_id=f"1:l{i}", src_port=50000 + i, dst_ip=ipaddress.ip_address(dst), dst_port=port,
            protocol=TCP, first_seen_at=at, last_seen_at=at + timedelta(seconds=4), src2dst_packets=12,
            src2dst_bytes=2200, dst2src_packets=10, dst2src_bytes=3100, psh_packets=4, dst_vmn=peer, **common,
        )  # fmt: skip
    for i in range(12):
        at = later + timedelta(seconds=60 + 5 * i)
        yield Flow(
            id=f"x{i}", community_id=f"1:x{i}", src_port=51000 + i, dst_ip=ipaddress.ip_address("203.0.113.200"),
            dst_port=443, protocol=TCP, first_seen_at=at, last_seen_at=at + timedelta(seconds=4),
            src2dst_packets=2800, src2dst_bytes=4_000_000, dst2src_packets=900, dst2src_bytes=60_000,
            psh_packets=40, **common,
        )  # fmt: skip


def public_flows() -> list[Flow]:
    data = shared_data()
    paths = [data / "ndpi/pcap/synscan.pcap", data / "zeek/traces/ssh/sshguess.pcap", data / "ndpi/pcap/dns.pcap",
             data / "ndpi/pcap/bad-dns-traffic.pcap"]  # fmt: skip
    return list(PcapSource(paths))


@pytest.fixture(scope="module")
def recorded() -> list[Flow]:
    return public_flows() + list(synthetic(3000)) + list(beacons(12)) + list(vmn_story())


def make(name: str, **settings: Any) -> Detector[Any]:
    cls = detector_types()[name]
    base = cls.settings_type()
    return cls(dataclasses.replace(base, **settings) if settings else None, CONTEXT)


def run(detector: Detector[Any], flows: list[Flow]) -> list[dict[str, Any]]:
    return [finding_to_json(f) for flow in flows for f in detector.observe(flow)]


def test_there_are_detectors_to_check() -> None:
    assert {"hunting.port_scan", "hunting.brute_force", "intel.match"} <= set(NAMES)
    assert {"hunting.exfiltration", "hunting.lateral_movement", "anomaly.hst"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_identity_and_documentation(name: str) -> None:
    cls = detector_types()[name]
    assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", cls.name), "names are dotted and stable"
    assert cls.name == name
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", cls.version)
    assert issubclass(cls.settings_type, DetectorSettings)
    assert dataclasses.is_dataclass(cls.settings_type)
    assert cls.settings_type.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert cls.__doc__ is not None
    assert len(cls.__doc__) > 100, "the docstring says what it detects, its parameters and source"


@pytest.mark.parametrize("name", NAMES)
def test_finds_something_in_the_recorded_traffic(name: str, recorded: list[Flow]) -> None:
    # guards the rest of the suite against passing vacuously on a detector that never fires
    assert run(make(name), recorded)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str, recorded: list[Flow]) -> None:
    assert run(make(name), recorded) == run(make(name), recorded)


@pytest.mark.parametrize("name", NAMES)
def test_input_is_not_mutated(name: str, recorded: list[Flow]) -> None:
    before = [dataclasses.asdict(f) for f in recorded]
    run(make(name), recorded)
    assert [dataclasses.asdict(f) for f in recorded] == before


@pytest.mark.parametrize("name", NAMES)
def test_time_comes_from_flows_only(name: str, recorded: list[Flow]) -> None:
    shift = timedelta(days=3650)
    moved = [dataclasses.replace(f, first_seen_at=f.first_seen_at + shift, last_seen_at=f.last_seen_at + shift)
             for f in recorded]  # fmt: skip

    def shape(findings: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(f["kind"], f["src_ip"], f["score"], f["community_ids"], f["measured"]) for f in findings]

    assert shape(run(make(name), moved)) == shape(run(make(name), recorded))


@pytest.mark.parametrize("name", NAMES)
def test_works_before_learning_and_without_dpi(name: str) -> None:
    detector = make(name)
    first = next(synthetic(1, dpi=False))
    assert isinstance(detector.observe(first), list)
    for flow in synthetic(500, dpi=False):
        detector.observe(flow)


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_round_trips_and_continues_exactly(name: str, recorded: list[Flow]) -> None:
    half = len(recorded) // 2
    whole = make(name)
    run(whole, recorded[:half])
    expected_rest = run(whole, recorded[half:])

    first = make(name)
    run(first, recorded[:half])
    state = json.loads(json.dumps(first.snapshot()))  # plain JSON data only
    second = make(name)
    second.restore(state)
    assert run(second, recorded[half:]) == expected_rest


@pytest.mark.parametrize("name", NAMES)
def test_memory_is_bounded_by_the_max_settings(name: str) -> None:
    caps = {f.name: 50 for f in dataclasses.fields(detector_types()[name].settings_type) if f.name.startswith("max_")}
    assert caps, "every detector with state declares its caps as max_* settings"
    detector = make(name, **caps)
    for flow in synthetic(4000):
        detector.observe(flow)
    size_at_4k = len(json.dumps(detector.snapshot()))
    for flow in synthetic(12000, start=4000):
        detector.observe(flow)
    assert len(json.dumps(detector.snapshot())) <= size_at_4k * 1.2 + 1000
