"""Property tests for the TMRSet evaluator against a deliberately naive oracle."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmshadow.domain.net import IPAddress, PortRange, Protocol
from vmshadow.domain.tmr import TMR, Action, Endpoint, EndpointKind, TMRSet, Verdict
from vmshadow.domain.vmn import VMN, Group

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VMNS = (
    VMN("vm1", addresses=(ipaddress.ip_address("198.18.0.1"),)),
    VMN("vm2", addresses=(ipaddress.ip_address("198.18.0.2"),)),
)
GROUPS = (Group("pair", vmns=("vm1",), networks=(ipaddress.ip_network("198.18.0.8/30"),)),)


@dataclass(frozen=True)
class Key:
    src_ip: IPAddress
    dst_ip: IPAddress
    protocol: int
    dst_port: int
    src_vmn: str | None = None
    dst_vmn: str | None = None


addresses = st.integers(0, 15).map(lambda i: ipaddress.ip_address(f"198.18.0.{i}"))
endpoints = st.one_of(
    st.just(Endpoint.any()),
    st.sampled_from(["vm1", "vm2"]).map(Endpoint.vmn),
    st.just(Endpoint.group("pair")),
    st.sampled_from(["198.18.0.0/29", "198.18.0.4/30", "198.18.0.3/32", "198.18.0.0/28"]).map(Endpoint.network),
)
port_lists = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5)), max_size=3).map(
    lambda xs: tuple(PortRange(a, a + b) for a, b in xs)
)


@st.composite
def tmrs(draw: st.DrawFn, index: int) -> TMR:
    protocol = draw(st.sampled_from([Protocol.ANY, Protocol.TCP, Protocol.UDP, Protocol.ICMP]))
    ports = draw(port_lists) if protocol.has_ports else ()
    expires = draw(st.one_of(st.none(), st.integers(-3, 3).map(lambda h: NOW + timedelta(hours=h))))
    return TMR(
        id=f"t{index}",
        priority=draw(st.integers(0, 5)),
        src=draw(endpoints),
        dst=draw(endpoints),
        action=draw(st.sampled_from(list(Action))),
        protocol=protocol,
        ports=ports,
        expires_at=expires,
    )


@st.composite
def tmr_sets(draw: st.DrawFn) -> TMRSet:
    n = draw(st.integers(0, 8))
    rules = tuple(draw(tmrs(i)) for i in range(n))
    return TMRSet(
        tmrs=rules,
        vmns=VMNS,
        groups=GROUPS,
        default_action=draw(st.sampled_from(list(Action))),
        vmn_defaults=draw(st.dictionaries(st.sampled_from(["vm1", "vm2"]), st.sampled_from(list(Action)))),
    )


keys = st.builds(
    Key,
    src_ip=addresses,
    dst_ip=addresses,
    protocol=st.sampled_from([1, 6, 17]),
    dst_port=st.integers(0, 40),
)


def _vmn_addresses(name: str) -> set[IPAddress]:
    return {a for v in VMNS if v.name == name for a in v.addresses}


def _side(endpoint: Endpoint, address: IPAddress) -> bool:
    if endpoint.kind is EndpointKind.ANY:
        return True
    if endpoint.kind is EndpointKind.VMN:
        return address in _vmn_addresses(endpoint.value)
    if endpoint.kind is EndpointKind.GROUP:
        return address in _vmn_addresses("vm1") or address in ipaddress.ip_network("198.18.0.8/30")
    return address in ipaddress.ip_network(endpoint.value)


def oracle(given_order: tuple[TMR, ...], tmrset: TMRSet, key: Key, at: datetime) -> Verdict:
    """Sort by priority (stable: equal priorities keep their given order), take the first live match."""
    numbers = {Protocol.TCP: 6, Protocol.UDP: 17, Protocol.ICMP: 1}
    for t in sorted(given_order, key=lambda t: t.priority):
        if t.expires_at is not None and t.expires_at <= at:
            continue
        if t.protocol is not Protocol.ANY and numbers[t.protocol] != key.protocol:
            continue
        if t.ports and not any(r.first <= key.dst_port <= r.last for r in t.ports):
            continue
        if _side(t.src, key.src_ip) and _side(t.dst, key.dst_ip):
            return Verdict(t.action, t.id)
    src_vmn = next((v.name for v in VMNS if key.src_ip in v.addresses), None)
    dst_vmn = next((v.name for v in VMNS if key.dst_ip in v.addresses), None)
    for name in (src_vmn, dst_vmn):
        if name is not None and name in tmrset.vmn_defaults:
            return Verdict(tmrset.vmn_defaults[name], None)
    return Verdict(tmrset.default_action, None)


def _resolved(tmrset: TMRSet, key: Key) -> Key:
    return Key(
        key.src_ip,
        key.dst_ip,
        key.protocol,
        key.dst_port,
        src_vmn=tmrset.vmn_map.identify(None, key.src_ip),
        dst_vmn=tmrset.vmn_map.identify(None, key.dst_ip),
    )


@settings(max_examples=400)
@given(tmr_sets(), keys, st.integers(-4, 4))
def test_first_match_by_priority_matches_the_oracle(tmrset: TMRSet, key: Key, hours: int) -> None:
    at = NOW + timedelta(hours=hours)
    resolved = _resolved(tmrset, key)
    # the TMRSet reorders; the oracle gets the original order to check the tie rule independently
    assert tmrset.evaluate(resolved, at) == oracle(
        tuple(sorted(tmrset.tmrs, key=lambda t: int(t.id[1:]))), tmrset, resolved, at
    )


@given(tmr_sets(), keys, st.randoms())
def test_verdict_does_not_depend_on_input_order_when_priorities_differ(tmrset: TMRSet, key: Key, rnd) -> None:
    distinct = tuple(
        TMR(t.id, i * 10 + t.priority, t.src, t.dst, t.action, t.protocol, t.ports, t.expires_at)
        for i, t in enumerate(tmrset.tmrs)
    )
    shuffled = list(distinct)
    rnd.shuffle(shuffled)
    a = TMRSet(tmrs=distinct, vmns=VMNS, groups=GROUPS)
    b = TMRSet(tmrs=tuple(shuffled), vmns=VMNS, groups=GROUPS)
    assert a.evaluate(key, NOW) == b.evaluate(key, NOW)


@given(keys, st.sampled_from(list(Action)))
def test_an_expired_tmr_never_decides_and_a_live_one_does(key: Key, action: Action) -> None:
    rule = TMR("only", 1, Endpoint.any(), Endpoint.any(), action, expires_at=NOW)
    default = Action.DENY if action is Action.ALLOW else Action.ALLOW
    tmrset = TMRSet(tmrs=(rule,), default_action=default)
    assert tmrset.evaluate(key, NOW - timedelta(microseconds=1)) == Verdict(action, "only")
    assert tmrset.evaluate(key, NOW) == Verdict(default, None)
    assert tmrset.evaluate(key, NOW + timedelta(days=1)) == Verdict(default, None)


def test_equal_priorities_keep_the_given_order() -> None:
    allow = TMR("a", 5, Endpoint.any(), Endpoint.any(), Action.ALLOW)
    deny = TMR("d", 5, Endpoint.any(), Endpoint.any(), Action.DENY)
    key = Key(ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2"), 6, 22)
    assert TMRSet(tmrs=(allow, deny)).evaluate(key, NOW).tmr_id == "a"
    assert TMRSet(tmrs=(deny, allow)).evaluate(key, NOW).tmr_id == "d"


def test_source_vmn_default_wins_over_destination_and_global() -> None:
    tmrset = TMRSet(vmns=VMNS, default_action=Action.ALLOW, vmn_defaults={"vm1": Action.DENY, "vm2": Action.ALLOW})
    out = Key(ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2"), 6, 22, "vm1", "vm2")
    back = Key(ipaddress.ip_address("198.18.0.2"), ipaddress.ip_address("198.18.0.1"), 6, 22, "vm2", "vm1")
    assert tmrset.evaluate(out, NOW) == Verdict(Action.DENY, None)
    assert tmrset.evaluate(back, NOW) == Verdict(Action.ALLOW, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tmrs": (TMR("x", 1, Endpoint.vmn("ghost"), Endpoint.any(), Action.DENY),)}, "unknown VMN 'ghost'"),
        ({"tmrs": (TMR("x", 1, Endpoint.group("g"), Endpoint.any(), Action.DENY),)}, "unknown group 'g'"),
        (
            {"tmrs": (TMR("x", 1, Endpoint.any(), Endpoint.any(), Action.DENY),) * 2},
            "duplicate TMR id 'x'",
        ),
        ({"vmn_defaults": {"ghost": Action.DENY}}, "unknown VMN 'ghost'"),
    ],
)
def test_inconsistent_sets_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TMRSet(**kwargs)  # type: ignore[arg-type]


def test_ports_need_a_protocol_with_ports() -> None:
    with pytest.raises(ValueError, match="ports need protocol tcp or udp"):
        TMR("x", 1, Endpoint.any(), Endpoint.any(), Action.DENY, Protocol.ICMP, (PortRange(1, 2),))


@settings(max_examples=400)
@given(tmr_sets(), keys, st.integers(-4, 4), st.integers(0, 8))
def test_removing_repeats_changes_no_verdict_then_or_later(tmrset: TMRSet, key: Key, hours: int, later: int) -> None:
    at = NOW + timedelta(hours=hours)
    repeats = tmrset.repeats(at)
    assert set(repeats.values()).isdisjoint(repeats), "the earlier TMR named is never a repeat itself"
    without = replace(tmrset, tmrs=tuple(t for t in tmrset.tmrs if t.id not in repeats))
    resolved = _resolved(tmrset, key)
    for when in (at, at + timedelta(hours=later)):
        verdict = tmrset.evaluate(resolved, when)
        assert verdict == without.evaluate(resolved, when)
        assert verdict.tmr_id not in repeats


def test_repeats_are_exact_and_an_earlier_tmr_that_expires_first_repeats_nothing() -> None:
    def t(tmr_id: str, priority: int, hours: int | None = None, **kw: object) -> TMR:
        expires = None if hours is None else NOW + timedelta(hours=hours)
        fields: dict[str, object] = {"protocol": Protocol.TCP, "ports": (PortRange(22, 22),), **kw}
        return TMR(tmr_id, priority, Endpoint.vmn("vm1"), Endpoint.any(), Action.DENY, expires_at=expires, **fields)  # type: ignore[arg-type]

    tmrset = TMRSet(
        tmrs=(
            t("later", 9),
            t("first", 1, hours=2),
            t("for-one-hour", 2, hours=1),
            t("for-three-hours", 3, hours=3),
            t("ports-listed-otherwise", 4, ports=(PortRange(22, 22), PortRange(22, 22))),
            t("udp", 5, protocol=Protocol.UDP),
            t("expired", 0, hours=-1),
        ),
        vmns=VMNS,
    )
    # for-three-hours and ports-listed-otherwise outlast the TMRs before them, so they decide once those expire;
    # `later` repeats the permanent one (ports compared once normalised); udp differs, expired is not in force
    assert tmrset.repeats(NOW) == {"for-one-hour": "first", "later": "ports-listed-otherwise"}
    assert tmrset.repeats(NOW + timedelta(hours=2, minutes=30)) == {"later": "ports-listed-otherwise"}
