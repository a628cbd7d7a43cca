"""`address_text`: the text `str()` gives, remembered within a bound."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmshadow.domain import net
from vmshadow.domain.net import address_text


@given(st.ip_addresses())
def test_the_text_is_str_of_the_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert address_text(address) == str(address)
    assert address_text(address) == str(address)  # remembered this time


def test_families_do_not_share_texts() -> None:
    # ::c612:1 and 198.18.0.1 are the same integer
    v4, v6 = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("::c612:1")
    assert int(v4) == int(v6)
    assert (address_text(v4), address_text(v6)) == ("198.18.0.1", "::c612:1")
    assert (address_text(v6), address_text(v4)) == ("::c612:1", "198.18.0.1")


def test_a_zone_is_kept_apart() -> None:
    plain, zoned = ipaddress.ip_address("fe80::1"), ipaddress.ip_address("fe80::1%vmsbr0")
    assert (address_text(plain), address_text(zoned)) == ("fe80::1", "fe80::1%vmsbr0")


def test_the_memo_stays_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net, "MAX_TEXTS", 8)
    monkeypatch.setattr(net, "_TEXTS_V4", {})
    for i in range(100):
        address = ipaddress.IPv4Address(0xC6120000 + i)
        assert address_text(address) == str(address)
        assert len(net._TEXTS_V4) <= 8
