"""Conflict analysis: shadowed, redundant, overriding an administrator's TMR; coverage checked against the evaluator."""

from __future__ import annotations

import ipaddress
import itertools
import random
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import T0, make_finding
from vmshadow.domain.flow import TCP
from vmshadow.domain.net import IPAddress, PortRange, Protocol, ports_contain
from vmshadow.domain.proposal import ProposalKind
from vmshadow.domain.tmr import TMR, Action, Endpoint, Origin, TMRSet
from vmshadow.domain.vmn import VMN, Group
from vmshadow.refinement.conflicts import Conflict, ConflictKind, analyze_tmrset, conflicts_of, covers, overlaps
from vmshadow.refinement.recommender import RecommendContext
from vmshadow.refinement.scoped_deny import ScopedDenyRecommender

A = ipaddress.ip_address
N = ipaddress.ip_network
VMNS = (
    VMN("vm1", addresses=(A("198.18.0.1"), A("198.18.0.2"))),
    VMN("vm2", addresses=(A("198.18.0.9"),)),
    VMN("vm3"),  # known by MAC only
)
GROUPS = (
    Group("web", vmns=("vm1",), networks=(N("198.18.0.8/30"),)),
    Group("halves", networks=(N("198.18.0.0/29"), N("198.18.0.8/29"))),  # together the /28
    Group("nobody"),
)
BASE = TMRSet(vmns=VMNS, groups=GROUPS)


def rule(tid: str, priority: int, src: Endpoint, dst: Endpoint, action: Action = Action.DENY, **kw: object) -> TMR:
    return TMR(tid, priority, src, dst, action, **kw)  # type: ignore[arg-type]


def tcp(*ports: tuple[int, int]) -> dict[str, object]:
    return {"protocol": Protocol.TCP, "ports": tuple(PortRange(a, b) for a, b in ports)}


# ---------------------------------------------------------------- coverage against a brute-force oracle


@dataclass(frozen=True)
class Key:
    src_ip: IPAddress
    dst_ip: IPAddress
    protocol: int
    dst_port: int
    src_vmn: str | None
    dst_vmn: str | None


ADDRESSES = [A(f"198.18.0.{i}") for i in range(16)] + [A("203.0.113.9"), A("192.0.2.1")]
LABELS: list[str | None] = [None, "vm1", "vm2", "vm3", "stranger"]
PORTS = list(range(42))  # generated ranges stay within 0..40: 41 stands for every other port
PROTOCOLS = [1, 6, 17, 58, 47]  # 47 (GRE) stands for protocols TMRs cannot name
SAMPLES = 1500

endpoints = st.one_of(
    st.just(Endpoint.any()),
    st.sampled_from([Endpoint.vmn(v.name) for v in VMNS]),
    st.sampled_from([Endpoint.group(g.name) for g in GROUPS]),
    st.builds(
        lambda host, prefix: Endpoint.network(f"198.18.0.{host}/{prefix}"),
        st.integers(0, 15),
        st.integers(28, 32),
    ),
    st.just(Endpoint.network("203.0.113.9")),
)
port_ranges = st.builds(lambda a, n: PortRange(a, min(40, a + n)), st.integers(0, 40), st.integers(0, 15))


@st.composite
def tmrs(draw: st.DrawFn, tid: str = "t") -> TMR:
    protocol = draw(st.sampled_from(list(Protocol)))
    ports = tuple(draw(st.lists(port_ranges, max_size=2))) if protocol.has_ports else ()
    return rule(tid, 1, draw(endpoints), draw(endpoints), protocol=protocol, ports=ports)


def values(tmrset: TMRSet, t: TMR) -> tuple[list[int], list[int], list[tuple[IPAddress, str | None]], ...]:
    """The universe's values each dimension of `t` matches, from the evaluator's own primitives."""
    pairs = list(itertools.product(ADDRESSES, LABELS))
    return (
        [p for p in PROTOCOLS if t.protocol.matches(p)],
        [p for p in PORTS if ports_contain(t.ports, p)],
        [(a, v) for a, v in pairs if tmrset.endpoint_matches(t.src, a, v)],
        [(a, v) for a, v in pairs if tmrset.endpoint_matches(t.dst, a, v)],
    )


def sample_keys(tmrset: TMRSet, t: TMR, rng: random.Random) -> list[Key]:
    protos, ports, srcs, dsts = values(tmrset, t)
    if not (protos and ports and srcs and dsts):
        return []
    keys = []
    for _ in range(SAMPLES):
        (s, sv), (d, dv) = rng.choice(srcs), rng.choice(dsts)
        keys.append(Key(s, d, rng.choice(protos), rng.choice(ports), sv, dv))
    return keys


@settings(max_examples=250, deadline=None)
@given(tmrs("outer"), tmrs("inner"), st.integers(0, 2**32))
def test_covers_agrees_with_the_evaluator(outer: TMR, inner: TMR, seed: int) -> None:
    keys = sample_keys(BASE, inner, random.Random(seed))
    assert all(BASE.matches(inner, k) for k in keys)
    escaped = [k for k in keys if not BASE.matches(outer, k)]
    # any value of one dimension outside `outer` shows up with probability >= 1/90 per sample: never missed
    assert covers(BASE, outer, inner) == (not escaped), escaped[:1]


@settings(max_examples=250, deadline=None)
@given(tmrs("a"), tmrs("b"))
def test_overlaps_agrees_with_the_evaluator(a: TMR, b: TMR) -> None:
    common = [[x for x in xs if x in ys] for xs, ys in zip(values(BASE, a), values(BASE, b), strict=True)]
    expected = all(common)
    if expected:
        protos, ports, srcs, dsts = (c[0] for c in common)
        key = Key(srcs[0], dsts[0], protos, ports, srcs[1], dsts[1])  # type: ignore[index]
        assert BASE.matches(a, key)
        assert BASE.matches(b, key)
    assert overlaps(BASE, a, b) == expected


def test_coverage_examples() -> None:
    def c(outer: TMR, inner: TMR) -> bool:
        return covers(BASE, outer, inner)

    any_any = rule("o", 1, Endpoint.any(), Endpoint.any())
    slash28 = rule("o", 1, Endpoint.network("198.18.0.0/28"), Endpoint.any())
    assert c(any_any, rule("i", 1, Endpoint.vmn("vm1"), Endpoint.group("web"), **tcp((22, 22))))
    assert c(slash28, rule("i", 1, Endpoint.network("198.18.0.4/30"), Endpoint.any()))
    assert c(rule("o", 1, Endpoint.group("halves"), Endpoint.any()), slash28), "two /29s make the /28"
    assert not c(slash28, rule("i", 1, Endpoint.vmn("vm1"), Endpoint.any())), "a VMN also matches by MAC"
    assert c(rule("o", 1, Endpoint.group("web"), Endpoint.any()), rule("i", 1, Endpoint.vmn("vm1"), Endpoint.any()))
    assert c(
        rule("o", 1, Endpoint.any(), Endpoint.any(), **tcp((20, 30))),
        rule("i", 1, *[Endpoint.any()] * 2, **tcp((22, 23))),
    )
    assert not c(rule("o", 1, *[Endpoint.any()] * 2, **tcp((0, 40))), rule("i", 1, *[Endpoint.any()] * 2, **tcp()))
    assert not c(rule("o", 1, *[Endpoint.any()] * 2, **tcp()), any_any), "tcp does not cover every protocol"
    assert c(rule("o", 1, Endpoint.vmn("vm3"), Endpoint.any()), rule("i", 1, Endpoint.group("nobody"), Endpoint.any()))


# ---------------------------------------------------------------- conflicts in priority order


def test_an_earlier_tmr_that_matches_everything_shadows() -> None:
    allow_lan = rule(
        "allow-lan", 10, Endpoint.any(), Endpoint.network("198.18.0.0/28"), Action.ALLOW, origin=Origin.ADMIN
    )
    tmrset = TMRSet(tmrs=(allow_lan,), vmns=VMNS, groups=GROUPS)
    late = rule("late", 50, Endpoint.vmn("vm1"), Endpoint.network("198.18.0.9"), **tcp((22, 22)))
    (shadowed,) = conflicts_of(late, tmrset)
    assert shadowed.kind is ConflictKind.SHADOWED
    assert (shadowed.tmr_id, shadowed.other_id, shadowed.tag) == ("late", "allow-lan", "shadowed:allow-lan")
    assert "never decides" in shadowed.sentence
    assert "allow-lan" in shadowed.sentence
    # the same deny placed first shadows nothing and overrides the administrator's allow instead
    early = rule("late", 5, Endpoint.vmn("vm1"), Endpoint.network("198.18.0.9"), **tcp((22, 22)))
    assert [c.tag for c in conflicts_of(early, tmrset)] == ["overrides_admin:allow-lan"]
    # a VMN destination is not provably inside the network (MAC-identified packets may carry any address)
    to_vmn = rule("to-vmn", 50, Endpoint.vmn("vm1"), Endpoint.vmn("vm2"))
    assert [c.kind for c in conflicts_of(to_vmn, tmrset)] == []


def test_equal_priority_goes_after_the_existing_tmr() -> None:
    first = rule("first", 10, Endpoint.any(), Endpoint.any(), origin=Origin.PROPOSAL)
    tmrset = TMRSet(tmrs=(first,), vmns=VMNS, groups=GROUPS)
    assert [c.tag for c in conflicts_of(rule("second", 10, Endpoint.vmn("vm1"), Endpoint.any()), tmrset)] == [
        "shadowed:first"
    ]


def test_a_later_tmr_with_the_same_action_makes_it_redundant_unless_another_decides_between() -> None:
    deny_all = rule("deny-all", 100, Endpoint.vmn("vm1"), Endpoint.any(), origin=Origin.PROPOSAL)
    new = rule("new", 10, Endpoint.vmn("vm1"), Endpoint.network("198.18.0.9"), **tcp((22, 22)))
    (redundant,) = conflicts_of(new, TMRSet(tmrs=(deny_all,), vmns=VMNS, groups=GROUPS))
    assert (redundant.kind, redundant.other_id) == (ConflictKind.REDUNDANT, "deny-all")
    assert "redundant" in redundant.sentence
    between = rule("ssh-ok", 50, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.PROPOSAL, **tcp((22, 22)))
    assert conflicts_of(new, TMRSet(tmrs=(deny_all, between), vmns=VMNS, groups=GROUPS)) == []
    unrelated = rule(
        "web-ok", 50, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.PROPOSAL, **tcp((80, 80))
    )
    assert [c.kind for c in conflicts_of(new, TMRSet(tmrs=(deny_all, unrelated), vmns=VMNS, groups=GROUPS))] == [
        ConflictKind.REDUNDANT
    ]


def test_overrides_only_admin_tmrs_of_the_opposite_action_that_overlap() -> None:
    admin_allow = rule("admin-allow", 100, Endpoint.group("web"), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN)
    admin_deny = rule(
        "admin-deny", 101, Endpoint.any(), Endpoint.any(), Action.DENY, origin=Origin.ADMIN, **tcp((23, 23))
    )
    intel_allow = rule("intel-allow", 102, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.INTEL)
    elsewhere = rule(
        "other-allow", 103, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN, protocol=Protocol.UDP
    )
    tmrset = TMRSet(tmrs=(admin_allow, admin_deny, intel_allow, elsewhere), vmns=VMNS, groups=GROUPS)
    new = rule("new", 1, Endpoint.vmn("vm1"), Endpoint.any(), **tcp((22, 22)))
    (override,) = conflicts_of(new, tmrset)
    assert isinstance(override, Conflict)
    assert (override.kind, override.other_id) == (ConflictKind.OVERRIDES_ADMIN, "admin-allow")
    assert "administrator's admin-allow" in override.sentence


def test_expiry_decides_who_can_shadow() -> None:
    soon = rule("soon", 1, Endpoint.any(), Endpoint.any(), expires_at=T0 + timedelta(hours=1), origin=Origin.PROPOSAL)
    tmrset = TMRSet(tmrs=(soon,), vmns=VMNS, groups=GROUPS)
    permanent = rule("permanent", 10, Endpoint.vmn("vm1"), Endpoint.any())
    assert conflicts_of(permanent, tmrset, T0) == [], "it decides once `soon` expires"
    brief = rule("brief", 10, Endpoint.vmn("vm1"), Endpoint.any(), expires_at=T0 + timedelta(minutes=5))
    assert [c.tag for c in conflicts_of(brief, tmrset, T0)] == ["shadowed:soon"]
    assert conflicts_of(brief, tmrset, T0 + timedelta(hours=2)) == [], "expired TMRs are left out"


def test_analyze_tmrset_lists_every_tmr_that_never_decides() -> None:
    tmrset = TMRSet(
        tmrs=(
            rule("wide", 10, Endpoint.group("web"), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN),
            rule("narrow", 20, Endpoint.vmn("vm1"), Endpoint.any(), **tcp((22, 22))),
            rule("other", 30, Endpoint.vmn("vm2"), Endpoint.any()),
            rule("again", 40, Endpoint.vmn("vm2"), Endpoint.network("198.18.0.1")),
            rule("gone", 5, Endpoint.any(), Endpoint.any(), expires_at=T0),
        ),
        vmns=VMNS,
        groups=GROUPS,
    )
    found = analyze_tmrset(tmrset, T0)
    assert [(c.tmr_id, c.other_id) for c in found] == [("narrow", "wide"), ("again", "other")]
    assert all(c.kind is ConflictKind.SHADOWED for c in found)
    assert analyze_tmrset(tmrset) == found, "`gone` expires, so it never shadows for good"


def test_scoped_deny_proposals_carry_their_conflicts() -> None:
    vm1 = VMN("vm1", addresses=(A("198.18.0.11"),))
    vm2 = VMN("vm2", addresses=(A("198.18.0.12"),))
    tmrset = TMRSet(
        tmrs=(
            rule("base", 100, Endpoint.any(), Endpoint.any(), Action.ALLOW, origin=Origin.ADMIN),
            rule("later-deny", 200, Endpoint.vmn("vm1"), Endpoint.any(), origin=Origin.PROPOSAL),
        ),
        vmns=(vm1, vm2),
    )
    finding = make_finding(src_ip=A("198.18.0.11"), src_vmn="vm1", dst_ips=(A("198.18.0.12"),), protocol=TCP, score=0.8)
    (p,) = ScopedDenyRecommender().propose([finding], tmrset, RecommendContext(now=T0))
    assert p.kind is ProposalKind.ADD_DENY
    assert p.conflicts == ("overrides_admin:base",), "not redundant: `base` allows everything before `later-deny`"
