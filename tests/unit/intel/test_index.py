from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.datadir import shared_data
from vmshadow.domain.errors import InputError
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.index import IndicatorIndex, normalize_domain, normalize_url
from vmshadow.intel.plain_list import load_plain_list

NOW = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def ind(
    kind: IndicatorType,
    value: str,
    source: str = "feed",
    confidence: int = 50,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> Indicator:
    return Indicator(kind, value, source, confidence=confidence, valid_from=valid_from, valid_until=valid_until)


# --- addresses --------------------------------------------------------------------------------------------------


def test_longest_prefix_wins() -> None:
    index = IndicatorIndex(
        [
            ind(IndicatorType.CIDR, "10.0.0.0/8", "wide"),
            ind(IndicatorType.CIDR, "10.1.0.0/16", "narrow"),
            ind(IndicatorType.IPV4, "10.1.2.3", "host"),
        ]
    )

    assert index.match_ip("10.1.2.3", NOW) == ind(IndicatorType.IPV4, "10.1.2.3", "host")
    assert index.match_ip(ipaddress.ip_address("10.1.9.9"), NOW) == ind(IndicatorType.CIDR, "10.1.0.0/16", "narrow")
    assert index.match_ip("10.200.0.1", NOW) == ind(IndicatorType.CIDR, "10.0.0.0/8", "wide")
    assert index.match_ip("11.0.0.1", NOW) is None
    assert index.match_ip("::1", NOW) is None  # an IPv6 lookup never reaches the IPv4 trie
    assert len(index) == 3


def _network_strategy(version: int) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    bits = 32 if version == 4 else 128
    # few leading bits vary, so addresses and networks meet often; every prefix length, /0 included
    return st.builds(
        lambda top, prefix: ipaddress.ip_network(((top << (bits - 4)), prefix), strict=False),
        st.integers(0, 15),
        st.integers(0, bits),
    )


def _address_strategy(version: int) -> st.SearchStrategy[int]:
    bits = 32 if version == 4 else 128
    return st.builds(lambda top, low: (top << (bits - 4)) | low, st.integers(0, 15), st.integers(0, (1 << 12) - 1))


@settings(max_examples=300, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    data=st.data(),
)
def test_match_ip_agrees_with_a_scan_of_every_listed_network(version: int, data: st.DataObject) -> None:
    """The network covers only skip the tries for addresses no listed network holds: the answer is always the most
    specific listed network or host holding the address (a brute-force scan is the oracle)."""
    networks = data.draw(st.lists(_network_strategy(version), min_size=1, max_size=8, unique=True))
    listed = [ind(IndicatorType.CIDR, str(n), f"s{i}") for i, n in enumerate(networks)]
    index = IndicatorIndex(listed)
    for number in data.draw(st.lists(_address_strategy(version), min_size=1, max_size=20)):
        address = ipaddress.ip_address(number) if version == 4 else ipaddress.IPv6Address(number)
        holding = [(n.prefixlen, i) for i, n in enumerate(networks) if address in n]
        expected = max(holding)[1] if holding else None
        found = index.match_ip(address, NOW)
        assert (found.source if found else None) == (f"s{expected}" if expected is not None else None), address
        assert index.match_ip(str(address), None) == found


def test_ipv6_and_ipv4_mapped_addresses() -> None:
    index = IndicatorIndex(
        [
            ind(IndicatorType.CIDR, "2001:db8::/32"),
            ind(IndicatorType.IPV6, "2001:db8::66"),
            ind(IndicatorType.IPV4, "192.0.2.1"),
        ]
    )

    assert index.match_ip("2001:db8::66", NOW) == ind(IndicatorType.IPV6, "2001:db8::66")
    assert index.match_ip("2001:db8:ffff::1", NOW) == ind(IndicatorType.CIDR, "2001:db8::/32")
    assert index.match_ip("2001:db9::1", NOW) is None
    assert index.match_ip("::ffff:192.0.2.1", NOW) == ind(IndicatorType.IPV4, "192.0.2.1")
    assert index.match_ip("fe80::1%eth0", NOW) is None


def test_an_expired_specific_indicator_gives_way_to_a_valid_wider_one() -> None:
    wide = ind(IndicatorType.CIDR, "198.51.100.0/24", "wide")
    host = ind(IndicatorType.IPV4, "198.51.100.7", "host", valid_from=NOW - 2 * HOUR, valid_until=NOW)
    index = IndicatorIndex([wide, host])

    assert index.match_ip("198.51.100.7", NOW - HOUR) == host
    assert index.match_ip("198.51.100.7", NOW) == wide  # valid_until is exclusive
    assert index.match_ip("198.51.100.7", NOW - 3 * HOUR) == wide  # not yet valid


def test_nothing_matches_when_every_indicator_is_expired() -> None:
    index = IndicatorIndex([ind(IndicatorType.IPV4, "192.0.2.1", valid_until=NOW)])

    assert index.match_ip("192.0.2.1", NOW - HOUR) is not None
    assert index.match_ip("192.0.2.1", NOW + HOUR) is None


def test_the_most_confident_valid_indicator_answers_for_one_key() -> None:
    low = ind(IndicatorType.IPV4, "192.0.2.1", "low", confidence=30)
    high_expired = ind(IndicatorType.IPV4, "192.0.2.1", "high", confidence=95, valid_until=NOW)
    mid = ind(IndicatorType.IPV4, "192.0.2.1", "mid", confidence=60)
    index = IndicatorIndex([low, high_expired, mid])

    assert index.match_ip("192.0.2.1", NOW - HOUR) == high_expired
    assert index.match_ip("192.0.2.1", NOW) == mid


def test_cidr_with_host_bits_from_other_feeds_is_indexed_as_its_network() -> None:
    index = IndicatorIndex([ind(IndicatorType.CIDR, "203.0.113.9/24")])

    assert index.match_ip("203.0.113.200", NOW) is not None


def test_ipsum_sample_matches_its_addresses_only() -> None:
    indicators = load_plain_list(shared_data() / "intel" / "ipsum" / "level8.txt")
    index = IndicatorIndex(indicators)

    assert len(index) == 23
    assert all(index.match_ip(i.value, NOW) == i for i in indicators)
    assert index.match_ip("192.0.2.1", NOW) is None


# --- domains ----------------------------------------------------------------------------------------------------


def test_a_listed_domain_covers_its_subdomains_only() -> None:
    evil = ind(IndicatorType.DOMAIN, "evil.com")
    index = IndicatorIndex([evil])

    for name in ("evil.com", "a.b.evil.com", "EVIL.COM.", "WWW.Evil.Com"):
        assert index.match_domain(name, NOW) == evil, name
    for name in ("notevil.com", "com", "evil.com.au", "evil.co", "", "evil.com.evil.org"):
        assert index.match_domain(name, NOW) is None, name


def test_the_most_specific_valid_domain_wins() -> None:
    parent = ind(IndicatorType.DOMAIN, "example.net", "parent")
    child = ind(IndicatorType.DOMAIN, "cdn.example.net", "child", valid_until=NOW)
    index = IndicatorIndex([parent, child])

    assert index.match_domain("x.cdn.example.net", NOW - HOUR) == child
    assert index.match_domain("x.cdn.example.net", NOW) == parent
    assert index.match_domain("www.example.net", NOW - HOUR) == parent


def test_internationalized_names_match_in_either_spelling() -> None:
    index = IndicatorIndex([ind(IndicatorType.DOMAIN, "Bücher.de")])

    assert index.match_domain("shop.xn--bcher-kva.de", NOW) is not None
    assert index.match_domain("shop.bücher.de", NOW) is not None
    assert index.match_domain("buecher.de", NOW) is None


# --- URLs and fingerprints --------------------------------------------------------------------------------------


def test_urls_match_exactly_after_normalization() -> None:
    index = IndicatorIndex([ind(IndicatorType.URL, "http://evil.com/payload.exe")])

    assert index.match_url("HTTP://EVIL.com/payload.exe#x", NOW) is not None
    assert index.match_url("http://evil.com/Payload.exe", NOW) is None  # paths are case-sensitive
    assert index.match_url("http://evil.com/", NOW) is None
    assert index.match_url("not a url", NOW) is None


def test_fingerprints_match_exactly_and_case_insensitively() -> None:
    ja3 = ind(IndicatorType.JA3, "E7D705A3286E19EA42F587B344EE6865")
    ja4 = ind(IndicatorType.JA4, "t13d1516h2_8daaf6152771_b186095e22b6", valid_until=NOW)
    index = IndicatorIndex([ja3, ja4])

    assert index.match_fingerprint("e7d705a3286e19ea42f587b344ee6865", NOW) == ja3
    assert index.match_fingerprint("t13d1516h2_8daaf6152771_b186095e22b6", NOW - HOUR) == ja4
    assert index.match_fingerprint("t13d1516h2_8daaf6152771_b186095e22b6", NOW) is None
    assert index.match_fingerprint("e7d705a3286e19ea42f587b344ee686", NOW) is None


def test_types_do_not_leak_into_each_other() -> None:
    index = IndicatorIndex([ind(IndicatorType.DOMAIN, "evil.com"), ind(IndicatorType.IPV4, "192.0.2.1")])

    assert index.match_fingerprint("evil.com", NOW) is None
    assert index.match_url("http://evil.com/", NOW) is None
    assert index.match_domain("192.0.2.1", NOW) is None


def test_an_empty_index_matches_nothing() -> None:
    index = IndicatorIndex([])

    assert len(index) == 0
    assert index.match_ip("192.0.2.1", NOW) is None
    assert index.match_domain("evil.com", NOW) is None


def test_every_unindexable_indicator_is_reported() -> None:
    bad = [
        ind(IndicatorType.IPV4, "2001:db8::1", "a"),
        ind(IndicatorType.CIDR, "10.0.0.0/33", "b"),
        ind(IndicatorType.DOMAIN, "bad..com", "c"),
        ind(IndicatorType.URL, "evil.com/path", "d"),
        ind(IndicatorType.JA3, "  ", "e"),
        ind(IndicatorType.IPV6, "fe80::1%eth0", "f"),
    ]

    with pytest.raises(InputError) as exc:
        IndicatorIndex([ind(IndicatorType.IPV4, "192.0.2.1"), *bad])

    assert sorted(issue.source for issue in exc.value.issues) == ["a", "b", "c", "d", "e", "f"]
    assert all(issue.field == "value" for issue in exc.value.issues)


def test_normalizers() -> None:
    assert normalize_domain("WWW.Example.ORG.") == "www.example.org"
    assert normalize_url("HTTPS://user:pw@Example.ORG:8443/A?b=C#d") == "https://user:pw@example.org:8443/A?b=C"
    with pytest.raises(ValueError, match="all digits"):
        normalize_domain("1.2.3")
    with pytest.raises(ValueError, match="punycode"):
        normalize_domain("xn--99999999.com")
    with pytest.raises(ValueError, match="more than 253"):
        normalize_domain(".".join(["a" * 60] * 5))


# --- property: longest-prefix match against a brute-force oracle --------------------------------------------------


def networks(version: int) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    bits = 32 if version == 4 else 128
    # few distinct top bits, so generated networks overlap and nest often
    top = st.integers(0, 3).map(lambda t: t << (bits - 2))
    low = st.integers(0, 2 ** (bits - 2) - 1)
    return st.builds(
        lambda t, lo, plen: ipaddress.ip_network((t | lo, plen), strict=False),
        top,
        low,
        st.integers(0, bits),
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data(), version=st.sampled_from([4, 6]))
def test_match_ip_agrees_with_a_brute_force_oracle(data: st.DataObject, version: int) -> None:
    listed = data.draw(st.lists(st.tuples(networks(version), st.booleans()), min_size=1, max_size=12))
    indicators = [
        ind(IndicatorType.CIDR, str(net), f"s{n}", valid_until=NOW if expired else None)
        for n, (net, expired) in enumerate(listed)
    ]
    index = IndicatorIndex(indicators)
    bits = 32 if version == 4 else 128
    inside = st.sampled_from([net for net, _ in listed]).flatmap(
        lambda net: st.integers(int(net.network_address), int(net.broadcast_address))
    )
    number = data.draw(st.one_of(inside, st.integers(0, 2**bits - 1)))
    address = ipaddress.ip_address(number) if version == 4 else ipaddress.IPv6Address(number)

    valid_containing = [net for net, expired in listed if not expired and address in net]
    found = index.match_ip(address, NOW)

    if not valid_containing:
        assert found is None
    else:
        assert found is not None
        network = ipaddress.ip_network(found.value)
        assert address in network
        assert network.prefixlen == max(net.prefixlen for net in valid_containing)
        assert found.is_valid(NOW)
