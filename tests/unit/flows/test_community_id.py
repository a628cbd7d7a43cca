"""The inline Community ID must equal the reference implementation (the `communityid` package)."""

from __future__ import annotations

import ipaddress

import communityid
from hypothesis import given
from hypothesis import strategies as st

from vmshadow.flows.community_id import community_id

REFERENCE = communityid.CommunityID()

v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
ports = st.integers(0, 65535)


def reference(src, dst, proto: int, sport: int, dport: int) -> str:  # type: ignore[no-untyped-def]
    return str(REFERENCE.calc(communityid.FlowTuple(proto, str(src), str(dst), sport, dport)))


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), st.sampled_from([6, 17, 132]), ports, ports)
def test_matches_reference_for_port_protocols(pair, proto: int, sport: int, dport: int) -> None:  # type: ignore[no-untyped-def]
    src, dst = pair
    assert community_id(src, dst, proto, sport, dport) == reference(src, dst, proto, sport, dport)


@given(st.tuples(v4, v4), st.integers(0, 20), st.integers(0, 5))
def test_matches_reference_for_icmp(pair, mtype: int, code: int) -> None:  # type: ignore[no-untyped-def]
    src, dst = pair
    assert community_id(src, dst, 1, mtype, code) == reference(src, dst, 1, mtype, code)


@given(st.tuples(v6, v6), st.integers(125, 150), st.integers(0, 5))
def test_matches_reference_for_icmpv6(pair, mtype: int, code: int) -> None:  # type: ignore[no-untyped-def]
    src, dst = pair
    assert community_id(src, dst, 58, mtype, code) == reference(src, dst, 58, mtype, code)


def test_both_directions_share_an_id() -> None:
    a, b = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")
    assert community_id(a, b, 6, 40000, 22) == community_id(b, a, 6, 22, 40000)


def test_spec_example() -> None:
    # from the Community ID specification's README (seed 0)
    src, dst = ipaddress.ip_address("128.232.110.120"), ipaddress.ip_address("66.35.250.204")
    assert community_id(src, dst, 6, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
