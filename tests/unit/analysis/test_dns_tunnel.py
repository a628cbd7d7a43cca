"""DNS tunnelling and DGA: labelled public captures are found, ordinary nDPI captures stay quiet, and synthetic
query streams pin down the thresholds."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.datadir import shared_data
from tests.integration.test_public_captures import ordinary_captures
from vmshadow.analysis.hunting.dns_tunnel import (
    DnsTunnelDetector,
    DnsTunnelSettings,
    SharedResolvers,
    entropy,
    looks_encoded,
    looks_generated,
    split_name,
)
from vmshadow.domain.finding import SHARED_RESOLVERS, Finding, FindingKind
from vmshadow.domain.flow import TCP, UDP, Flow
from vmshadow.flows.pcap import PcapSource

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

LABELLED = [
    ("ndpi/pcap/dns-tunnel-iodine.pcap", "10.0.2.30", "pirate.sea"),
    ("ndpi/pcap/bad-dns-traffic.pcap", "192.168.43.91", "skullseclabs.org"),
    ("ndpi/pcap/dns_exfiltration.pcap", "192.168.220.56", "19e4d098dc8c618f8d81cfeb02"),
    ("pcap-attack/Command_and_Control__cmds_over_dns_txt_queries_and_reponses.pcap", "192.168.100.121",
     "ostrykebs.pl"),
]  # fmt: skip


def run(detector: DnsTunnelDetector, flows: Iterable[Flow]) -> list[Finding]:
    return [f for flow in flows for f in detector.observe(flow)]


def capture(path: str | Path) -> list[Flow]:
    return list(PcapSource([shared_data() / path]))


def query(n: int, name: str, seconds: float = 0.0, **overrides: Any) -> Flow:
    at = T0 + timedelta(seconds=seconds)
    values: dict[str, Any] = {
        "id": f"q{n}",
        "community_id": f"1:q{n}=",
        "src_ip": ipaddress.ip_address("10.0.0.5"),
        "src_port": 30000 + n,
        "dst_ip": ipaddress.ip_address("10.0.0.53"),
        "dst_port": 53,
        "protocol": UDP,
        "first_seen_at": at,
        "last_seen_at": at + timedelta(milliseconds=20),
        "src2dst_packets": 1,
        "src2dst_bytes": 60 + len(name),
        "dst2src_packets": 1,
        "dst2src_bytes": 120 + len(name),
        "application": "DNS",
        "dns_query": name,
        "src_vmn": "web-1",
    }
    values.update(overrides)
    return Flow(**values)


@pytest.mark.parametrize(("path", "client", "parent"), LABELLED)
def test_labelled_tunnel_client_is_found(path: str, client: str, parent: str) -> None:
    found = [f for f in run(DnsTunnelDetector(), capture(path)) if f.kind is FindingKind.DNS_TUNNEL]
    assert found, path
    assert {str(f.src_ip) for f in found} == {client}
    assert found[0].measured["parent"] == parent
    assert found[0].attack_technique == "T1071.004"
    assert found[0].community_ids


@pytest.mark.parametrize(
    ("path", "min_score"),
    [("ndpi/pcap/bad-dns-traffic.pcap", 0.85), ("ndpi/pcap/dns_exfiltration.pcap", 0.8),
     ("ndpi/pcap/dns-tunnel-iodine.pcap", 0.6)],
)  # fmt: skip
def test_encoded_and_voluminous_tunnels_score_high_enough_for_a_rule(path: str, min_score: float) -> None:
    found = run(DnsTunnelDetector(), capture(path))
    assert max(f.score for f in found) >= min_score


def test_foudre_dga_domain_in_http_host_gives_a_dga_alert() -> None:
    found = run(DnsTunnelDetector(), capture("pcap-attack/Command_and_Control__C2_Foudre_Backdoor_DGA.pcapng"))
    assert [(f.kind, str(f.src_ip), f.measured["examples"]) for f in found] == [
        (FindingKind.DGA, "10.0.2.15", "db54a845.top")
    ]
    assert found[0].score < 0.6, "one machine-looking name is an alert, not a rule"
    assert found[0].attack_technique == "T1568.002"


def test_ordinary_ndpi_captures_stay_quiet() -> None:
    paths = ordinary_captures()
    assert len(paths) >= 60
    noisy = {p.name: [f.summary for f in run(DnsTunnelDetector(), capture(p))] for p in paths}
    assert {name: found for name, found in noisy.items() if found} == {}


def test_many_unique_encoded_subdomains_under_one_parent() -> None:
    names = [f"{(i * 2654435761) % 2**64:016x}{i:04x}.t.example.com" for i in range(40)]
    found = run(DnsTunnelDetector(), (query(i, n, i * 0.5) for i, n in enumerate(names)))
    first = found[0]
    assert first.kind is FindingKind.DNS_TUNNEL
    assert first.measured["unique_subdomains"] == 16
    assert first.measured["encoded_share"] == 1.0
    assert first.measured["parent"] == "example.com"
    assert first.score >= 0.7
    assert first.dst_ips == (ipaddress.ip_address("10.0.0.53"),)
    assert first.dst_ports == (53,)


def test_one_flow_carrying_many_queries_counts_each_datagram() -> None:
    found = run(DnsTunnelDetector(), [query(0, "vaaaakardli.pirate.sea", src2dst_packets=200, src2dst_bytes=23000)])
    assert found[0].measured["queries"] == 200
    assert found[0].measured["mean_query_bytes"] == 115.0


def test_ordinary_browsing_is_quiet() -> None:
    sites = ["www.example.com", "cdn.example.com", "api.github.com", "www.bbc.co.uk", "news.bbc.co.uk",
             "mail.google.com", "fonts.googleapis.com", "static.xx.fbcdn.net", "1.2.3.4.in-addr.arpa"]  # fmt: skip
    flows = [query(i, sites[i % len(sites)], i * 2.0) for i in range(120)]
    assert run(DnsTunnelDetector(), flows) == []


def test_queries_outside_the_window_do_not_add_up() -> None:
    flows = [query(i, f"h{i}.example.com", i * 30.0) for i in range(40)]  # one new name every 30 s
    assert run(DnsTunnelDetector(DnsTunnelSettings(window_s=300)), flows) == []
    assert run(DnsTunnelDetector(DnsTunnelSettings(window_s=3600)), flows)


def test_mdns_llmnr_reverse_lookups_and_missing_names_are_ignored() -> None:
    flows = [query(0, "printer.local", dst_port=5353, application="MDNS", src2dst_packets=500),
             query(1, "4.3.2.1.in-addr.arpa", src2dst_packets=500),
             query(2, "", src2dst_packets=500),
             query(3, "wpad", dst_port=5355, application="LLMNR", src2dst_packets=500)]  # fmt: skip
    assert run(DnsTunnelDetector(), flows) == []


def test_dns_over_tcp_counts_segments_with_data() -> None:
    flow = query(0, "x.example.com", protocol=TCP, src2dst_packets=300, psh_packets=50)
    assert run(DnsTunnelDetector(DnsTunnelSettings(min_queries=50)), [flow])[0].measured["queries"] == 50


def test_dga_names_from_one_source_escalate() -> None:
    domains = [f"c{i:02d}d{i * 37 % 100:02d}fe.top" for i in range(16)]  # c00d00fe.top, c01d37fe.top, ...
    found = run(DnsTunnelDetector(), (query(i, d, i * 1.0) for i, d in enumerate(domains)))
    dga = [f for f in found if f.kind is FindingKind.DGA]
    assert [f.measured["domains"] for f in dga] == [1, 4, 16]
    assert dga[-1].score == 1.0


def test_growth_raises_again_only_at_milestones() -> None:
    flows = [query(i, f"{i:032x}.x.example.org", i * 0.1) for i in range(300)]
    found = run(DnsTunnelDetector(), flows)
    assert [f.measured["unique_subdomains"] for f in found] == [16, 64, 256]


def browsing(start: int, sites: tuple[str, ...] = ("www.shop.test", "cdn.news.test", "time.corp.test")) -> list[Flow]:
    """Ordinary lookups through the default server (10.0.0.53), from another VMN: several parent domains."""
    return [query(start + i, site, i * 1.0, src_ip=ipaddress.ip_address("10.0.0.6")) for i, site in enumerate(sites)]


def tunnel(start: int, server: str = "10.0.0.53", n: int = 40) -> list[Flow]:
    dst = ipaddress.ip_address(server)
    return [query(start + i, f"{i:024x}.t.tunnel.test", 10 + i * 0.2, dst_ip=dst) for i in range(n)]


def test_a_tunnel_through_a_server_asked_under_several_parents_names_it_a_shared_resolver() -> None:
    detector = DnsTunnelDetector()
    assert run(detector, browsing(0)) == []
    (through_resolver,) = run(detector, tunnel(100))
    assert through_resolver.measured[SHARED_RESOLVERS] == "10.0.0.53"
    detector = DnsTunnelDetector()
    run(detector, browsing(0))
    (direct,) = run(detector, tunnel(200, server="203.0.113.9"))
    assert direct.dst_ips == (ipaddress.ip_address("203.0.113.9"),)
    assert direct.measured[SHARED_RESOLVERS] == "", "a server asked only under the tunnel's parent is its endpoint"


def test_two_parents_do_not_make_a_shared_resolver() -> None:
    detector = DnsTunnelDetector()
    run(detector, browsing(0, sites=("www.shop.test",)))
    (found,) = run(detector, tunnel(100))
    assert found.measured[SHARED_RESOLVERS] == ""
    detector = DnsTunnelDetector(DnsTunnelSettings(resolver_min_parents=2))
    run(detector, browsing(0, sites=("www.shop.test",)))
    (found,) = run(detector, tunnel(100))
    assert found.measured[SHARED_RESOLVERS] == "10.0.0.53"


def test_remembered_servers_are_bounded_least_recently_used_first() -> None:
    servers = SharedResolvers(min_parents=2, max_servers=2)
    for server in ("10.0.0.1", "10.0.0.2"):
        servers.note(server, "a.test")
        servers.note(server, "b.test")
    servers.note("10.0.0.1", "c.test")  # 10.0.0.1 used last: 10.0.0.2 goes when a third server comes
    servers.note("10.0.0.3", "a.test")
    assert [servers.is_shared(s) for s in ("10.0.0.1", "10.0.0.2", "10.0.0.3")] == [True, False, False]
    assert len(servers.parents["10.0.0.1"]) == 2, "no more parents kept than the judgement needs"


def test_snapshot_is_plain_json_and_continues_exactly() -> None:
    flows = browsing(1000) + [query(i, f"{i:020x}.x.example.org", i * 0.1) for i in range(100)]
    whole = DnsTunnelDetector()
    run(whole, flows[:50])
    expected = run(whole, flows[50:])
    first = DnsTunnelDetector()
    run(first, flows[:50])
    second = DnsTunnelDetector()
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert run(second, flows[50:]) == expected
    assert expected[0].measured[SHARED_RESOLVERS] == "10.0.0.53", "the shared resolver is part of the state"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.b.example.com", ("a.b", "example.com")), ("x.example.co.uk", ("x", "example.co.uk")),
     ("example.com", ("", "example.com")), ("abc.def.1234", ("abc.def", "1234")),
     ("deep.shop.com.au", ("deep", "shop.com.au")), ("WWW.Example.COM.", ("www", "example.com"))],
)  # fmt: skip
def test_split_name(name: str, expected: tuple[str, str]) -> None:
    assert split_name(name) == expected


def test_label_features() -> None:
    assert entropy("") == 0.0
    assert entropy("aaaa") == 0.0
    assert entropy("abcd") == 2.0
    assert looks_encoded("958700a621c3620001636f6e736f6c65")
    assert looks_encoded("mzxw6ytboi2dqmzrgaytqnrxgm3tanby")  # base32 with digits
    assert not looks_encoded("verylongbutordinaryhostnamelabel")
    assert looks_generated("db54a845")
    assert looks_generated("6gyip7tqim7sieb")
    assert not looks_generated("googlesyndication")
    assert not looks_generated("1e100")
    assert not looks_generated("deadbeef")  # hex letters only, no digits
