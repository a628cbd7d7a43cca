from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.datadir import shared_data
from vmshadow.analysis import registry
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.intel.intel_match import IntelMatchDetector, IntelMatchSettings
from vmshadow.domain.errors import InputError
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.plain_list import load_plain_list

T0 = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)
VMN_IP = "10.0.0.5"
C2_IP = "203.0.113.66"
JA4 = "t13d1516h2_8daaf6152771_b186095e22b6"
JA3S = "f4febc55ea12b31ae17cfb7e614afda8"

INDICATORS = (
    Indicator(IndicatorType.IPV4, C2_IP, "c2-list", confidence=95),
    Indicator(IndicatorType.CIDR, "198.51.100.0/24", "drop", confidence=40),
    Indicator(IndicatorType.DOMAIN, "evil.com", "domains", confidence=70),
    Indicator(IndicatorType.JA4, JA4, "ja4db", confidence=80),
    Indicator(IndicatorType.JA3, JA3S, "sslbl", confidence=60),
    Indicator(IndicatorType.DOMAIN, "old.example", "domains", valid_until=T0),
)


def flow(n: int = 0, seconds: float = 0.0, **overrides: Any) -> Flow:
    start = T0 + timedelta(seconds=seconds)
    values: dict[str, Any] = {
        "id": f"flow-{n}",
        "community_id": f"1:cid{n}=",
        "src_ip": ipaddress.ip_address(VMN_IP),
        "src_port": 40000 + n,
        "dst_ip": ipaddress.ip_address("192.0.2.80"),
        "dst_port": 443,
        "protocol": TCP,
        "first_seen_at": start,
        "last_seen_at": start + timedelta(seconds=2),
        "src2dst_packets": 5,
        "src2dst_bytes": 600,
        "dst2src_packets": 4,
        "dst2src_bytes": 3000,
        "src_vmn": "web-1",
    }
    values.update(overrides)
    return Flow(**values)


def detector(indicators: tuple[Indicator, ...] = INDICATORS, **settings: Any) -> IntelMatchDetector:
    return IntelMatchDetector(IntelMatchSettings(**settings), DetectorContext(indicators=indicators))


def one(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def test_is_registered_under_its_name() -> None:
    assert registry._REGISTRY["intel.match"] is IntelMatchDetector
    assert (IntelMatchDetector.name, IntelMatchDetector.version) == ("intel.match", "1.0")


def test_vmn_contacting_a_listed_address() -> None:
    f = flow(dst_ip=ipaddress.ip_address(C2_IP))

    finding = one(detector().observe(f))

    assert finding.kind is FindingKind.INTEL_MATCH
    assert (finding.detector, finding.detector_version) == ("intel.match", "1.0")
    assert finding.src_ip == ipaddress.ip_address(VMN_IP)
    assert finding.src_vmn == "web-1"
    assert finding.dst_ips == (ipaddress.ip_address(C2_IP),)
    assert finding.dst_ports == (443,)
    assert finding.protocol == TCP
    assert finding.community_ids == ("1:cid0=",)
    assert finding.indicator == C2_IP
    assert finding.score == pytest.approx(0.95)
    assert finding.severity is Severity.CRITICAL
    assert finding.attack_technique == "T1071"
    assert (finding.first_seen_at, finding.observed_at) == (f.first_seen_at, f.last_seen_at)
    assert finding.measured == {
        "indicator_type": "ipv4",
        "indicator_source": "c2-list",
        "confidence": 95,
        "matched_field": "dst_ip",
        "matched_value": C2_IP,
    }
    assert finding.summary == (
        f"{VMN_IP} (web-1) contacted {C2_IP} port 443, listed by c2-list as ipv4 {C2_IP}, confidence 95"
    )


def test_listed_outside_address_contacting_a_vmn_names_the_vmn_as_the_local_side() -> None:
    f = flow(
        src_ip=ipaddress.ip_address("198.51.100.23"),
        src_port=51515,
        src_vmn=None,
        dst_ip=ipaddress.ip_address(VMN_IP),
        dst_port=22,
        dst_vmn="web-1",
    )

    finding = one(detector().observe(f))

    assert finding.src_ip == ipaddress.ip_address(VMN_IP)
    assert finding.src_vmn == "web-1"
    assert finding.dst_ips == (ipaddress.ip_address("198.51.100.23"),)
    assert finding.dst_ports == ()  # deny the listed address on every port, not on its ephemeral one
    assert finding.indicator == "198.51.100.0/24"
    assert finding.measured["matched_field"] == "src_ip"
    assert finding.severity is Severity.MEDIUM
    assert finding.attack_technique is None
    assert finding.summary.startswith("198.51.100.23, listed by drop as cidr 198.51.100.0/24")


def test_dns_query_for_a_subdomain_of_a_listed_domain_does_not_blame_the_resolver() -> None:
    f = flow(dst_ip=ipaddress.ip_address("10.0.0.1"), dst_port=53, protocol=UDP, dns_query="a.b.evil.com")

    finding = one(detector().observe(f))

    assert finding.indicator == "evil.com"
    assert finding.dst_ips == ()
    assert finding.dst_ports == ()
    assert finding.measured["matched_field"] == "dns_query"
    assert finding.measured["matched_value"] == "a.b.evil.com"
    assert finding.severity is Severity.HIGH
    assert finding.summary == (
        f"{VMN_IP} (web-1) asked DNS for a.b.evil.com, listed by domains as domain evil.com, confidence 70"
    )


def test_sni_and_host_naming_the_same_listed_domain_give_one_finding() -> None:
    f = flow(sni="www.evil.com", http_host="evil.com", dst_port=80)

    finding = one(detector().observe(f))

    assert finding.measured["matched_field"] == "sni"
    assert finding.dst_ips == (ipaddress.ip_address("192.0.2.80"),)
    assert finding.dst_ports == (80,)


@pytest.mark.parametrize("field", ["sni", "http_host", "dns_query"])
def test_a_similar_but_unlisted_name_does_not_match(field: str) -> None:
    overrides: dict[str, Any] = {field: "notevil.com"}
    assert detector().observe(flow(**overrides)) == []


def test_address_and_name_matches_of_different_indicators_are_separate_findings() -> None:
    f = flow(dst_ip=ipaddress.ip_address(C2_IP), sni="evil.com")

    findings = detector().observe(f)

    assert [x.indicator for x in findings] == [C2_IP, "evil.com"]
    assert len({x.id for x in findings}) == 2


def test_fingerprints_of_a_vmn_client_point_at_the_server() -> None:
    f = flow(client_fingerprint=JA4.upper(), server_fingerprint=JA3S)

    findings = detector().observe(f)

    assert [(x.measured["matched_field"], x.indicator) for x in findings] == [
        ("server_fingerprint", JA3S),
        ("client_fingerprint", JA4),
    ]
    for finding in findings:
        assert finding.src_ip == ipaddress.ip_address(VMN_IP)
        assert finding.dst_ips == (ipaddress.ip_address("192.0.2.80"),)
        assert finding.attack_technique == "T1071"


def test_listed_client_fingerprint_of_an_outside_client_points_at_the_client() -> None:
    f = flow(
        src_ip=ipaddress.ip_address("192.0.2.99"),
        src_vmn=None,
        dst_ip=ipaddress.ip_address(VMN_IP),
        dst_vmn="web-1",
        client_fingerprint=JA4,
    )

    finding = one(detector().observe(f))

    assert finding.src_ip == ipaddress.ip_address(VMN_IP)
    assert finding.src_vmn == "web-1"
    assert finding.dst_ips == (ipaddress.ip_address("192.0.2.99"),)
    assert finding.attack_technique is None


def test_expired_indicators_are_ignored_by_flow_time() -> None:
    before = flow(0, seconds=-60, dns_query="www.old.example")  # last seen 58 s before T0
    after = flow(1, seconds=0, dns_query="www.old.example")  # last seen 2 s after T0

    det = detector()

    assert one(det.observe(before)).indicator == "old.example"
    assert det.observe(after) == []


def test_flows_without_dpi_fields_or_listed_addresses_give_nothing() -> None:
    det = detector()

    assert det.observe(flow()) == []
    assert detector(()).observe(flow(dst_ip=ipaddress.ip_address(C2_IP))) == []


def test_ids_depend_only_on_flow_and_indicator() -> None:
    f = flow(dst_ip=ipaddress.ip_address(C2_IP))

    first = one(detector().observe(f)).id
    again = one(detector().observe(f)).id
    other_flow = one(detector().observe(flow(7, dst_ip=ipaddress.ip_address(C2_IP)))).id

    assert first == again
    assert first.startswith("finding-")
    assert other_flow != first


def test_a_pair_is_reported_once_per_repeat_window_of_flow_time() -> None:
    det = detector(repeat_after_s=600)
    to_c2 = {"dst_ip": ipaddress.ip_address(C2_IP)}

    assert len(det.observe(flow(0, seconds=0, **to_c2))) == 1
    assert det.observe(flow(1, seconds=300, **to_c2)) == []
    # another local address is another pair
    assert len(det.observe(flow(2, seconds=301, src_ip=ipaddress.ip_address("10.0.0.6"), **to_c2))) == 1
    # the first report was at its last_seen_at, 2 s: the window ends at 602 s
    assert det.observe(flow(3, seconds=599, **to_c2)) == []  # last seen at 601 s
    assert len(det.observe(flow(4, seconds=600, **to_c2))) == 1  # last seen at 602 s


def test_remembered_pairs_are_capped_and_the_oldest_is_forgotten() -> None:
    det = detector(max_pairs=3)
    to_c2 = {"dst_ip": ipaddress.ip_address(C2_IP)}
    locals_ = [ipaddress.ip_address(f"10.0.1.{n}") for n in range(5)]

    for n, local in enumerate(locals_):
        assert len(det.observe(flow(n, seconds=n, src_ip=local, **to_c2))) == 1

    assert [row[0] for row in det.snapshot()["reported"]] == ["10.0.1.2", "10.0.1.3", "10.0.1.4"]
    assert len(det.observe(flow(10, seconds=10, src_ip=locals_[0], **to_c2))) == 1  # forgotten: reported again
    assert det.observe(flow(11, seconds=11, src_ip=locals_[4], **to_c2)) == []  # remembered


def test_snapshot_is_json_and_restore_continues_where_it_was_taken() -> None:
    flows = [
        flow(n, seconds=n * 400, dst_ip=ipaddress.ip_address(C2_IP), sni="evil.com" if n % 2 else "") for n in range(12)
    ]
    original = detector(repeat_after_s=1000)
    for f in flows[:6]:
        original.observe(f)

    state = json.loads(json.dumps(original.snapshot()))
    restored = detector(repeat_after_s=1000)
    restored.restore(state)

    assert restored.snapshot() == original.snapshot()
    assert [restored.observe(f) for f in flows[6:]] == [original.observe(f) for f in flows[6:]]


def test_restore_rejects_foreign_snapshots() -> None:
    det = detector()

    with pytest.raises(InputError, match="snapshot version"):
        det.restore({"version": 99, "reported": []})
    with pytest.raises(InputError, match="malformed snapshot"):
        det.restore({"version": 1, "reported": [["10.0.0.1", "ipv4"]]})


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_pairs"):
        IntelMatchSettings(max_pairs=0)
    with pytest.raises(ValueError, match="repeat_after_s"):
        IntelMatchSettings(repeat_after_s=-1)


def test_default_construction_works() -> None:
    det = IntelMatchDetector()

    assert det.settings == IntelMatchSettings()
    assert det.observe(flow(dst_ip=ipaddress.ip_address(C2_IP))) == []


def test_ipsum_feed_against_flows() -> None:
    indicators = tuple(load_plain_list(shared_data() / "intel" / "ipsum" / "level8.txt", source="ipsum-8"))
    listed = ipaddress.ip_address(indicators[0].value)
    det = detector(indicators)

    finding = one(det.observe(flow(dst_ip=listed)))

    assert finding.measured["indicator_source"] == "ipsum-8"
    assert finding.severity is Severity.HIGH
    assert det.observe(flow(1, dst_ip=ipaddress.ip_address("192.0.2.1"))) == []
