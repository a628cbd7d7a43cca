"""The index as the live refresh and the retro-hunt use it: text addresses, validity not asked, added to."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmshadow.domain.errors import InputError
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.index import IndicatorIndex

NOW = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)


def ind(kind: IndicatorType, value: str, source: str = "feed", **kw: object) -> Indicator:
    return Indicator(kind, value, source, **kw)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    hosts=st.lists(st.integers(0, 2**32 - 1), max_size=6),
    probe=st.integers(0, 2**32 - 1),
    prefix=st.integers(0, 32),
    expired=st.booleans(),
)
def test_text_and_object_addresses_give_the_same_answer(
    version: int, hosts: list[int], probe: int, prefix: int, expired: bool
) -> None:
    def address(n: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.IPv4Address(n) if version == 4 else ipaddress.IPv6Address(n << 96 | n)

    until = NOW if expired else None
    listed = [ind(IndicatorType.IPV4 if version == 4 else IndicatorType.IPV6, str(address(h))) for h in hosts]
    net = ipaddress.ip_network(f"{address(probe)}/{prefix if version == 4 else prefix * 4}", strict=False)
    listed.append(ind(IndicatorType.CIDR, str(net), "nets", valid_until=until))
    index = IndicatorIndex(listed)
    for candidate in [address(probe), *(address(h) for h in hosts), address(probe ^ 1)]:
        assert index.match_ip(str(candidate), NOW) == index.match_ip(candidate, NOW)
        assert index.match_ip(candidate.exploded, NOW) == index.match_ip(candidate, NOW)
        # validity not asked: any listing at all
        any_listing = index.match_ip(str(candidate), None)
        assert (any_listing is not None) == (candidate in net or candidate in {address(h) for h in hosts})


def test_ipv4_mapped_text_matches_the_ipv4_listing() -> None:
    index = IndicatorIndex([ind(IndicatorType.CIDR, "198.51.100.0/24")])
    found = index.match_ip("::ffff:198.51.100.9", NOW)
    assert found is not None
    assert found.value == "198.51.100.0/24"
    assert index.match_ip("::ffff:198.51.101.9", NOW) is None


def test_validity_not_asked_finds_expired_and_future_listings_but_revoked_ones_too() -> None:
    index = IndicatorIndex(
        [
            ind(IndicatorType.DOMAIN, "old.example", valid_until=NOW - timedelta(days=1)),
            ind(IndicatorType.DOMAIN, "soon.example", valid_from=NOW + timedelta(days=1)),
        ]
    )
    assert index.match_domain("a.old.example", NOW) is None
    assert index.match_domain("a.old.example", None) is not None
    assert index.match_domain("soon.example", None) is not None


def test_added_indicators_match_and_a_resent_one_replaces_the_one_held() -> None:
    index = IndicatorIndex([ind(IndicatorType.IPV4, "198.51.100.7", confidence=60)])
    assert len(index) == 1
    assert index.add([ind(IndicatorType.DOMAIN, "evil.example")]) == 1
    assert index.match_domain("x.evil.example", NOW) is not None
    index.add([ind(IndicatorType.IPV4, "198.51.100.7", revoked=True)])
    assert len(index) == 2, "replaced, not added"
    assert index.match_ip("198.51.100.7", NOW) is None, "the revocation took effect"
    index.add([ind(IndicatorType.IPV4, "198.51.100.7", "other-feed", confidence=90)])
    found = index.match_ip("198.51.100.7", NOW)
    assert found is not None
    assert found.source == "other-feed"


def test_a_bad_indicator_in_an_addition_changes_nothing() -> None:
    index = IndicatorIndex([ind(IndicatorType.IPV4, "198.51.100.7")])
    with pytest.raises(InputError) as caught:
        index.add([ind(IndicatorType.DOMAIN, "good.example"), ind(IndicatorType.IPV4, "2001:db8::1", "bad-feed")])
    assert "bad-feed" in str(caught.value)
    assert "IPv6" in str(caught.value)
    assert len(index) == 1
    assert index.match_domain("good.example", NOW) is None
