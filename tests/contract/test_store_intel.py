"""The store's part in threat intel, on both backends: flow keys for the retro-hunt's scan, flows by id, and
indicators updated since a time (the live refresh)."""

from __future__ import annotations

import json
from datetime import timedelta
from ipaddress import ip_address
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table

from tests.factories import at, make_flow
from vmshadow.adapters.sql import SqlStore, open_store, tables
from vmshadow.adapters.sql.store import _flow_row, _indicator_row, make_engine, upgrade
from vmshadow.domain.flow import Flow
from vmshadow.domain.indicator import Indicator, IndicatorType

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


def test_indicator_rows_are_written_as_sqlalchemy_writes_them(fresh_url: FreshUrl) -> None:
    """SQLite stores indicators through the DB-API's executemany: the columns must hold what SQLAlchemy's types
    would have written, or time comparisons (expiry, updated_since) would go wrong."""
    listed = Indicator(IndicatorType.DOMAIN, "evil.example", "feed", valid_until=at(3600), revoked=True, labels=("c2",))
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
