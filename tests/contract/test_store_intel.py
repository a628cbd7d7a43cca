"""The store's part in threat intel, on both backends: flow keys for the retro-hunt's scan, flows by id, and
indicators updated since a time (the live refresh)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError

from tests.factories import at, make_flow
from vmshadow.adapters.sql import SqlStore, open_store, tables
from vmshadow.adapters.sql.store import _flow_row, _indicator_row, make_engine, upgrade
from vmshadow.analysis.detector import DetectorContext
from vmshadow.analysis.intel.intel_match import IntelMatchDetector
from vmshadow.app.intel import retro_hunt_in
from vmshadow.domain import codec
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.intel.index import IndicatorIndex
from vmshadow.intel.retro_hunt import key_filter, touching

from .conftest import FreshUrl


def test_flow_keys_carry_addresses_and_dpi_names_within_the_window(store: SqlStore) -> None:
    flows = [
        _bare(0, sni="a.example.com"),
        _bare(10, dns_query="q.example.net", dst_ip=ip_address("198.18.0.2")),
        _bare(20, http_host="h.example.org", client_fingerprint="t13d_x", server_fingerprint="abc"),
    ]
    store.save_batch(flows=flows)
    keys = sorted(store.flow_keys(since=at(5)))
    assert keys == [
        ("flow-10", "2001:db8::10", "198.18.0.2", "q.example.net", "", "", "", ""),
        ("flow-20", "2001:db8::10", "2001:db8:0:1::53", "", "", "h.example.org", "t13d_x", "abc"),
    ]
    assert [k[0] for k in store.flow_keys(until=at(5))] == ["flow-0"]
    assert sorted(k[0] for k in store.flow_keys()) == ["flow-0", "flow-10", "flow-20"]


def test_flows_by_id_returns_known_ones_oldest_first(store: SqlStore) -> None:
    flows = [make_flow(n) for n in (3, 1, 2)]
    store.save_batch(flows=flows)
    found = store.flows_by_id(["flow-2", "nope", "flow-1", "flow-2"])
    assert found == [flows[1], flows[2]]
    assert store.flows_by_id([]) == []
    many = [f"missing-{n}" for n in range(1200)] + ["flow-3"]  # more than one IN list
    assert store.flows_by_id(many) == [flows[0]]


def test_indicators_updated_since_are_the_new_and_the_resent(store: SqlStore) -> None:
    old = Indicator(IndicatorType.IPV4, "198.51.100.1", "feed")
    new = Indicator(IndicatorType.DOMAIN, "evil.example", "feed")
    store.save_indicators([old], at=at(0))
    store.save_indicators([new], at=at(100))
    assert store.indicators(updated_since=at(50)) == [new]
    revoked = Indicator(IndicatorType.IPV4, "198.51.100.1", "feed", revoked=True)
    store.save_indicators([revoked], at=at(200))
    assert store.indicators(updated_since=at(150)) == [revoked], "a revocation is an update the refresh must see"
    assert sorted(store.indicators(updated_since=at(0) - timedelta(seconds=1)), key=str) == sorted(
        [new, revoked], key=str
    )


@pytest.mark.parametrize("field", ["sni", "dns_query", "http_host", "client_fingerprint", "server_fingerprint"])
def test_migration_0004_fills_the_key_columns_of_flows_stored_before_it(fresh_url: FreshUrl, field: str) -> None:
    url = fresh_url()
    engine = make_engine(url)
    flow = _bare(1, **{field: "x.example.com"})
    try:
        upgrade(engine, "0003")
        # the flows table as 0003 made it: the names are only in the JSON form
        before = Table("flows", MetaData(), *(Column(c.name, c.type) for c in tables.flows.c if c.name in _AT_0003))
        row = {k: v for k, v in _flow_row(flow).items() if k in _AT_0003}
        with engine.begin() as conn:
            conn.execute(before.insert(), [row])
        upgrade(engine, "head")
    finally:
        engine.dispose()
    with open_store(url) as store:
        (keys,) = store.flow_keys()
        assert keys[3:] == tuple("x.example.com" if f == field else "" for f in _NAMES)
        assert store.flows_by_id([flow.id]) == [flow]


def _bare(n: int, **overrides: Any) -> Flow:
    """A flow with no DPI names but those given."""
    return make_flow(n, **{**dict.fromkeys(_NAMES, ""), **overrides})


_NAMES = ("dns_query", "sni", "http_host", "client_fingerprint", "server_fingerprint")
_AT_0003 = {c.name for c in tables.flows.c} - set(_NAMES)


@pytest.mark.parametrize(
    "listed",
    [
        Indicator(IndicatorType.DOMAIN, "evil.example", "feed", valid_until=at(3600), revoked=True, labels=("c2",)),
        Indicator(IndicatorType.IPV4, "198.51.100.1", "ipsum/1.txt", confidence=70),
        Indicator(IndicatorType.URL, 'http://x.example/"q"\\ü', 'a "quoted" sourcé', confidence=0, revoked=True),
        Indicator(IndicatorType.JA3, "abcdefabcdefabcdefabcdefabcdefab", "f", external_id="indicator--1"),
        Indicator(IndicatorType.CIDR, "2001:db8::/32", "f", valid_from=at(0), kill_chain_phases=("k:p",)),
    ],
    ids=["full", "plain", "plain-quoted", "external-id", "valid-from"],
)
def test_indicator_rows_are_written_as_sqlalchemy_writes_them(fresh_url: FreshUrl, listed: Indicator) -> None:
    """SQLite stores indicators through the DB-API's executemany: the columns must hold what SQLAlchemy's types
    would have written, or time comparisons (expiry, updated_since) would go wrong; the JSON form is the very text
    `json.dumps` makes of the codec's form."""
    url = fresh_url()
    with open_store(url) as store:
        store.save_indicators([listed], at=at(10))
    engine = make_engine(url)
    query = "SELECT id, type, value, source, valid_until, revoked, updated_at, data FROM indicators"
    try:
        with engine.begin() as conn:
            fast = conn.exec_driver_sql(query).one()
            conn.execute(tables.indicators.delete())
            conn.execute(tables.indicators.insert(), [_indicator_row(listed, at(10))])
            core = conn.exec_driver_sql(query).one()
    finally:
        engine.dispose()
    decode = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731 - JSON is text on SQLite
    assert (*fast[:7], decode(fast[7])) == (*core[:7], decode(core[7]))
    if isinstance(fast[7], str):
        assert fast[7] == json.dumps(codec.indicator_to_json(listed))


def test_a_bulk_upsert_rebuilds_the_indexes_it_dropped(fresh_url: FreshUrl) -> None:
    """Big batches are stored with the secondary indexes built afresh (SQLite): they must all be back, the rows
    queryable through them, and a batch that fails must leave table and indexes as they were."""
    url = fresh_url()
    many = [Indicator(IndicatorType.DOMAIN, f"h{n}.example", f"s{n % 7}") for n in range(60_000)]
    with open_store(url) as store:
        store.save_indicators(many[:10], at=at(0))
        assert store.save_indicators(many, at=at(10)) == len(many)
        assert store.save_indicators([*many[:5], many[0]], at=at(20)) == 5  # an update, duplicates counted once
        assert len(store.indicators(source="s3")) == len([i for i in many if i.source == "s3"])
        assert {i.value for i in store.indicators(updated_since=at(15))} == {i.value for i in many[:5]}
        with pytest.raises(ValueError, match="naive"):  # refused before any SQL
            store.save_indicators([*many, replace(many[0], valid_until=datetime(2026, 1, 1))], at=at(30))
        fresh = [replace(i, source="again") for i in many]
        with pytest.raises((sqlite3.IntegrityError, IntegrityError)):  # refused by the database, mid-batch
            store.save_indicators([*fresh, replace(many[1], value=None)], at=at(30))  # type: ignore[arg-type]
        assert len(store.indicators()) == len(many)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            names = {i["name"] for i in sa_inspect(conn).get_indexes("indicators")}
    finally:
        engine.dispose()
    assert names >= {"ix_indicators_value", "ix_indicators_source", "ix_indicators_valid_until"}


# --- the retro-hunt's scan: what the store leaves out with `candidates` is never what `touching` keeps ---


def _words(text: str) -> list[str]:
    return text.split()


_LISTED = [
    Indicator(IndicatorType.IPV4, "198.51.100.1", "f"),
    Indicator(IndicatorType.IPV4, "192.0.2.255", "f"),
    Indicator(IndicatorType.CIDR, "198.51.100.64/26", "f"),
    Indicator(IndicatorType.CIDR, "10.0.0.0/8", "f"),
    Indicator(IndicatorType.CIDR, "172.16.0.0/12", "f"),
    Indicator(IndicatorType.CIDR, "203.0.113.128/25", "f"),
    Indicator(IndicatorType.IPV6, "2001:db8::1", "f"),
    Indicator(IndicatorType.IPV6, "2001:db8:0:0:1::5", "f"),
    Indicator(IndicatorType.CIDR, "2001:db8:aa::/48", "f"),
    Indicator(IndicatorType.CIDR, "2001:db8:0:5::/64", "f"),
    Indicator(IndicatorType.CIDR, "2001:db8:1000::/36", "f"),
    Indicator(IndicatorType.CIDR, "2001:db8:0:7:8000::/65", "f"),
    Indicator(IndicatorType.DOMAIN, "evil.example", "f"),
    Indicator(IndicatorType.DOMAIN, "a.b.bad.test", "f"),
    Indicator(IndicatorType.DOMAIN, "bücher.example", "f"),
    Indicator(IndicatorType.JA3, "abcdefabcdefabcdefabcdefabcdefab", "f"),
    Indicator(IndicatorType.JA4, "t13d1516h2_8daaf6152771_b186095e22b6", "f"),
]
_ON_EDGE_ADDRESSES = _words("""
    198.51.100.1 198.51.100.2 198.51.100.65 198.51.100.127 198.51.100.128 10.1.2.3 11.0.0.1 9.255.255.255
    172.31.255.255 172.32.0.0 172.15.0.1 203.0.113.200 203.0.113.1 192.0.2.255 192.0.2.25 1.2.3.4
    2001:db8::1 2001:db8::2 2001:db8::1:0:0:5 2001:db8:aa::1 2001:db8:aa:ffff:ffff:ffff:ffff:ffff
    2001:db8:ab::1 2001:db8:0:5::9 2001:db8:0:5:1:2:3:4 2001:db8:0:5:: 2001:db8:0:6::9 2001:db8:1fff:ffff::1
    2001:db8:2000::1 2001:db8:0:7:8000::1 2001:db8:0:7::1 ::ffff:198.51.100.1 ::ffff:10.9.9.9 ::ffff:1.2.3.4
    :: ::1 2001:db8:: 1:: 2001:db8:0:0:1:0:0:5 fe80::1 0:1:2:3:4:5:6:7 2001:db8::5:0:0:1
""")
_ON_EDGE_NAMES = [
    *_words("""
        evil.example www.EVIL.example evil.example. evil.example.. notevil.example evil.example.com evil.examples
        x.bad.test bad.test b.bad.test z.a.b.bad.test a.b.bad.test A.B.BAD.TEST bücher.example www.bücher.example
        xn--bcher-kva.example www.xn--bcher-kva.example evil.example:8080 evil..example com example . .evil.example
        www.evil.ex_ample
    """),
    *(" evil.example", "evil.example ", "evil.example\t", "ev il.example", "www.EVIL.EXAMPLE\t", "EVIL.EXAMPLE. "),
]
_ON_EDGE_PRINTS = [
    "abcdefabcdefabcdefabcdefabcdefab",
    "ABCDEFABCDEFABCDEFABCDEFABCDEFAB",
    " abcdefabcdefabcdefabcdefabcdefab ",
    "abcdefabcdefabcdefabcdefabcdefac",
    "t13d1516h2_8daaf6152771_b186095e22b6",
    "T13D1516H2_8DAAF6152771_B186095E22B6",
]
_CLEAN = {"src_ip": ip_address("3fff::10"), "dst_ip": ip_address("192.0.2.7")}  # listed by nothing


def _tricky_flows() -> list[Flow]:
    """Flows whose keys sit on every edge of the store's key test: near and inside listed networks, IPv6 text with
    "::" anywhere, IPv4-mapped, names in upper case, with trailing dots, spaces, ports, IDNs; fingerprints in
    upper case and with spaces."""
    flows: list[Flow] = []
    for text in _ON_EDGE_ADDRESSES:
        for side in ("src_ip", "dst_ip"):
            flows.append(_bare(len(flows), **{**_CLEAN, side: ip_address(text)}))
    for name in _ON_EDGE_NAMES:
        for field in ("dns_query", "sni", "http_host"):
            flows.append(_bare(len(flows), **_CLEAN, **{field: name}))
    for fingerprint in _ON_EDGE_PRINTS:
        for field in ("client_fingerprint", "server_fingerprint"):
            flows.append(_bare(len(flows), **_CLEAN, **{field: fingerprint}))
    flows.append(_bare(len(flows), **_CLEAN))
    return flows


@pytest.mark.parametrize(
    "listed",
    [
        pytest.param(_LISTED, id="mixed"),
        pytest.param([*_LISTED, Indicator(IndicatorType.CIDR, "2000::/3", "w")], id="wide-v6"),
        pytest.param([*_LISTED, Indicator(IndicatorType.CIDR, "0.0.0.0/1", "w")], id="wide-v4"),
        pytest.param([Indicator(IndicatorType.DOMAIN, "evil.example", "f")], id="names-only"),
        pytest.param(  # prefixes whose groups the text writes as "::"
            [Indicator(IndicatorType.CIDR, n, "f") for n in ("2001:db8:0:0:5::/80", "2001:db8:aa::/48")], id="v6-deep"
        ),
        pytest.param([Indicator(IndicatorType.IPV4, "10.1.2.3", "f")], id="one-host"),
    ],
)
def test_flow_keys_with_candidates_keep_every_flow_touching_keeps(store: SqlStore, listed: list[Indicator]) -> None:
    flows = _tricky_flows()
    store.save_batch(flows=flows)
    index = IndicatorIndex(listed)
    everything = list(store.flow_keys())
    narrowed = list(store.flow_keys(candidates=key_filter(index)))
    expected = set(touching(index, everything))
    assert expected, "the case lists something the flows touch"
    assert set(touching(index, narrowed)) == expected
    assert {k[0] for k in narrowed} <= {k[0] for k in everything}
    if store.url.startswith("sqlite"):
        assert len(narrowed) < len(everything), "SQLite applies the test: flows no indicator lists stay out"


def test_count_flows_within_a_window(store: SqlStore) -> None:
    store.save_batch(flows=[make_flow(n) for n in (0, 10, 20)])
    assert store.count_flows() == 3
    assert store.count_flows(since=at(5)) == 2
    assert store.count_flows(since=at(5), until=at(20)) == 1


def test_retro_hunt_finds_what_the_detector_finds_over_every_archived_flow(store: SqlStore) -> None:
    """The reference: decode every archived flow of the window and give each to the detector, oldest first."""
    flows = [replace(f, first_seen_at=at(n * 60), last_seen_at=at(n * 60 + 5)) for n, f in enumerate(_tricky_flows())]
    flows += [replace(f, id=f"{f.id}-again", first_seen_at=at(n * 60 + 30), last_seen_at=at(n * 60 + 35))
              for n, f in enumerate(_tricky_flows())]  # fmt: skip
    store.save_batch(flows=flows)
    now = at(len(flows) * 60)
    window = timedelta(seconds=len(flows) * 60 - 600)  # the first flows are outside it
    hunt = retro_hunt_in(store, _LISTED, now=now, window=window, ongoing=timedelta(0))
    detector = IntelMatchDetector(None, DetectorContext(indicators=tuple(_LISTED)))
    reference = [f for flow in store.flows(since=now - window) for f in detector.observe(flow)]
    assert reference, "the archive holds matches"
    assert [(f.id, f.observed_at, f.indicator) for f in hunt.findings] == [
        (f.id, f.observed_at, f.indicator) for f in reference
    ]
    assert all(f.measured["retro_hunt"] == 1 for f in hunt.findings)
    assert hunt.flows_checked == len(store.flows(since=now - window))
