"""`to_flow` against its simple version: the same `Flow` for every record of real captures (IPv4 and IPv6), with and
without a VMN map. `to_flow` parses addresses with inet_pton and skips VMN lookups when no VMN is named."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import pytest
from nfstream import NFStreamer

from tests.datadir import shared_data
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.vmn import VMN, VMNMap
from vmshadow.flows.community_id import community_id
from vmshadow.flows.pcap import N_DISSECTIONS, _address, to_flow


def reference_to_flow(nf: Any, vmn_map: VMNMap, source: str) -> Flow:
    """`to_flow` as it was (commit 2dda9ff)."""

    def time(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    src_ip = ipaddress.ip_address(nf.src_ip)
    dst_ip = ipaddress.ip_address(nf.dst_ip)
    cid = community_id(src_ip, dst_ip, nf.protocol, nf.src_port, nf.dst_port)
    app: str = nf.application_name or ""
    master = app.split(".", 1)[0]
    name: str = nf.requested_server_name or ""
    return Flow(
        id=stable_id("flow", cid, nf.bidirectional_first_seen_ms, source), community_id=cid, src_ip=src_ip,
        src_port=nf.src_port, dst_ip=dst_ip, dst_port=nf.dst_port, protocol=nf.protocol,
        first_seen_at=time(nf.bidirectional_first_seen_ms), last_seen_at=time(nf.bidirectional_last_seen_ms),
        src2dst_packets=nf.src2dst_packets, src2dst_bytes=nf.src2dst_bytes, dst2src_packets=nf.dst2src_packets,
        dst2src_bytes=nf.dst2src_bytes, src_mac=nf.src_mac or "", dst_mac=nf.dst_mac or "",
        src_vmn=vmn_map.identify(nf.src_mac, src_ip), dst_vmn=vmn_map.identify(nf.dst_mac, dst_ip),
        syn_packets=nf.bidirectional_syn_packets, rst_packets=nf.bidirectional_rst_packets,
        psh_packets=nf.bidirectional_psh_packets, fin_packets=nf.bidirectional_fin_packets, application=app,
        category=nf.application_category_name or "", application_is_guessed=bool(nf.application_is_guessed),
        sni=name if master in ("TLS", "QUIC") else "", dns_query=name if master == "DNS" else "", host_name=name,
        http_host=name if master.startswith("HTTP") else "", user_agent=nf.user_agent or "",
        client_fingerprint=nf.client_fingerprint or "", server_fingerprint=nf.server_fingerprint or "", source=source,
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0", "1.2.3.4", "255.255.255.255", "198.18.0.1", "::", "::1", "2001:db8::1", "::ffff:192.0.2.1",
     "fe80::1%eth0", "ff02::fb", "2001:db8:0:0:1:0:0:1"],
)  # fmt: skip
def test_address_is_ip_address(text: str) -> None:
    (got, packed), expected = _address(text), ipaddress.ip_address(text)
    assert got == expected
    assert packed == expected.packed
    assert type(got) is type(expected)
    assert str(got) == str(expected)


@pytest.mark.parametrize("text", ["", "1.2.3", "1.2.3.256", "01.2.3.4", "1::2::3", "example.org", "1.2.3.4 "])
def test_bad_addresses_fail_as_ip_address_does(text: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        _address(text)


def test_same_flows_as_the_reference() -> None:
    data = shared_data()
    paths = [data / "ndpi/pcap/http_ipv6.pcap", data / "ndpi/pcap/synscan.pcap", data / "zeek/traces/ssh/sshguess.pcap"]
    records = [
        (nf, str(path))
        for path in paths
        for nf in NFStreamer(source=str(path), n_dissections=N_DISSECTIONS, statistical_analysis=True, n_meters=1)
    ]
    assert any(":" in nf.src_ip for nf, _ in records)
    first = records[0][0]
    vmn_maps = [
        VMNMap(),
        VMNMap(
            (
                VMN("by-mac", macs=(first.src_mac.upper(),)),
                VMN("by-address", addresses=(ipaddress.ip_address(records[-1][0].dst_ip),)),
            )
        ),
    ]
    for vmn_map in vmn_maps:
        flows = [to_flow(nf, vmn_map, source) for nf, source in records]
        assert flows == [reference_to_flow(nf, vmn_map, source) for nf, source in records]
    assert {f.src_vmn for f in flows} >= {"by-mac", None}
    assert "by-address" in {f.dst_vmn for f in flows}
