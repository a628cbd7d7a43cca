"""Conflict analysis: how a TMR relates to the TMRs around it, in full priority order.

Three kinds, decided on the *match space* of a TMR (protocol x destination ports x source x destination):

- `shadowed`: an earlier active TMR matches everything this one matches, so this one never decides.
- `redundant`: a later TMR with the same action matches everything this one matches, and no TMR between them
  with the opposite action overlaps it: removing this one changes no verdict. (An earlier covering TMR is reported
  as `shadowed`, which says more. A later one with an opposite-action TMR in between is *not* redundant: the TMR in
  between would decide first.)
- `overrides_admin`: this TMR comes before a TMR an administrator wrote (`origin admin`) with the opposite action,
  and their match spaces overlap: it changes what the administrator's TMR decides. Conservative: reported on
  overlap even when an intervening TMR already decides the overlapping traffic.

Endpoint semantics follow `TMRSet.endpoint_matches` exactly: `any` is every address; a network its addresses; a
VMN matches a packet labelled with its name (by MAC) *or* carrying one of its addresses; a group is the union of
its VMNs and networks. Coverage is therefore decided as "labels and addresses both contained". Consequence, on
purpose: a network never covers a VMN, even one holding all of its addresses, because a packet identified as that
VMN by its MAC may carry any address (spoofed or not yet listed); we cannot prove coverage, so we do not claim it.
A TMR whose expiry comes before the other's cannot shadow it or make it redundant (it stops deciding first).

`covers` and `overlaps` are exact with respect to `TMRSet.matches` (property-tested against it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from vmshadow.domain.net import IPNetwork, PortRange, Protocol, host_network, normalize_ports
from vmshadow.domain.tmr import TMR, EndpointKind, Origin, TMRSet
from vmshadow.domain.vmn import VMN

_ALL_PORTS = (PortRange(0, 65535),)
_EVERY_V4 = ipaddress.IPv4Network("0.0.0.0/0")
_EVERY_V6 = ipaddress.IPv6Network("::/0")


class ConflictKind(StrEnum):
    SHADOWED = "shadowed"
    REDUNDANT = "redundant"
    OVERRIDES_ADMIN = "overrides_admin"
    # against rules of proposals waiting for review (`refinement/pending.py`); `other_id` is the proposal's id
    PENDING_SHADOWED = "pending_shadowed"  # once that proposal is applied, this rule never decides
    PENDING_SHADOWS = "pending_shadows"  # once this rule is applied, that proposal's rule never decides
    PENDING_REDUNDANT = "pending_redundant"  # once that proposal is applied, removing this rule changes nothing
    PENDING_CONTRADICTS = "pending_contradicts"  # opposite actions on traffic both rules match
    PENDING_SAME_TMR = "pending_same_tmr"  # both proposals write the TMR with this id


@dataclass(frozen=True, slots=True)
class Conflict:
    """`tmr_id` is the TMR analysed, `other_id` the TMR it conflicts with (for `pending_*` kinds: the id of the
    pending proposal whose rule it conflicts with), `sentence` says so for people."""

    kind: ConflictKind
    tmr_id: str
    other_id: str
    sentence: str

    @property
    def tag(self) -> str:
        """`kind:other_id`, the spelling stored in `Proposal.conflicts`."""
        return f"{self.kind}:{self.other_id}"


@dataclass(frozen=True, slots=True)
class _Side:
    """The (address, VMN label) pairs an endpoint matches: every pair whose label is in `labels` or whose address
    is in one of `networks` (collapsed); `everything` for `any`."""

    everything: bool
    labels: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @property
    def empty(self) -> bool:
        return not self.everything and not self.labels and not self.networks


def _collapse(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def _side(tmrset: TMRSet, tmr: TMR, src: bool) -> _Side:
    endpoint = tmr.src if src else tmr.dst
    if endpoint.kind is EndpointKind.ANY:
        return _EVERYTHING
    if endpoint.kind is EndpointKind.NETWORK:
        return _Side(False, frozenset(), (endpoint.as_network,))
    names: tuple[str, ...] = (endpoint.value,)
    networks: tuple[IPNetwork, ...] = ()
    if endpoint.kind is EndpointKind.GROUP:
        group = tmrset.group(endpoint.value)
        if group is None:
            raise ValueError(f"TMR {tmr.id}: unknown group {endpoint.value!r}")
        names, networks = group.vmns, group.networks
    vmns = []
    for name in names:
        vmn = tmrset.vmn(name)
        if vmn is None:
            raise ValueError(f"TMR {tmr.id}: unknown VMN {name!r}")
        vmns.append(vmn)
    return _named_side(tuple(vmns), networks)


_EVERYTHING = _Side(True, frozenset(), ())


@lru_cache(maxsize=4096)
def _named_side(vmns: tuple[VMN, ...], networks: tuple[IPNetwork, ...]) -> _Side:
    """The side of a VMN or group, by its members (cached: a proposal is compared with every TMR, and collapsing
    the same members' addresses again each time dominated the analysis)."""
    collapsed = _collapse([*networks, *(host_network(a) for v in vmns for a in v.addresses)])
    if _EVERY_V4 in collapsed and _EVERY_V6 in collapsed:
        return _EVERYTHING
    return _Side(False, frozenset(v.name for v in vmns), collapsed)


def _nets_within(inner: tuple[IPNetwork, ...], outer: tuple[IPNetwork, ...]) -> bool:
    # `outer` is collapsed: a CIDR block lies in the union of collapsed blocks only when it lies in one of them
    return all(any(n.version == o.version and n.subnet_of(o) for o in outer) for n in inner)  # type: ignore[arg-type]


def _side_covers(outer: _Side, inner: _Side) -> bool:
    if outer.everything or inner.empty:
        return True
    if inner.everything:
        return False
    return inner.labels <= outer.labels and _nets_within(inner.networks, outer.networks)


def _side_overlaps(a: _Side, b: _Side) -> bool:
    if a.empty or b.empty:
        return False
    if a.everything or b.everything:
        return True
    if a.labels & b.labels or (a.labels and b.networks) or (b.labels and a.networks):
        return True
    return any(x.overlaps(y) for x in a.networks for y in b.networks)


def _ports(tmr: TMR) -> tuple[PortRange, ...]:
    return normalize_ports(tmr.ports) if tmr.ports else _ALL_PORTS


def _protocol_covers(outer: Protocol, inner: Protocol) -> bool:
    return outer is Protocol.ANY or outer is inner


def _protocol_overlaps(a: Protocol, b: Protocol) -> bool:
    return Protocol.ANY in (a, b) or a is b


def covers(tmrset: TMRSet, outer: TMR, inner: TMR) -> bool:
    """True when `outer` matches every packet `inner` matches (VMNs and groups resolved through `tmrset`)."""
    inner_src, inner_dst = _side(tmrset, inner, True), _side(tmrset, inner, False)
    if inner_src.empty or inner_dst.empty:
        return True  # matches nothing
    outer_ports = _ports(outer)
    return (
        _protocol_covers(outer.protocol, inner.protocol)
        and all(any(r.first >= o.first and r.last <= o.last for o in outer_ports) for r in _ports(inner))
        and _side_covers(_side(tmrset, outer, True), inner_src)
        and _side_covers(_side(tmrset, outer, False), inner_dst)
    )


def overlaps(tmrset: TMRSet, a: TMR, b: TMR) -> bool:
    """True when some packet matches both `a` and `b`."""
    return (
        _protocol_overlaps(a.protocol, b.protocol)
        and any(x.first <= y.last and y.first <= x.last for x in _ports(a) for y in _ports(b))
        and _side_overlaps(_side(tmrset, a, True), _side(tmrset, b, True))
        and _side_overlaps(_side(tmrset, a, False), _side(tmrset, b, False))
    )


def outlives(a: TMR, b: TMR) -> bool:
    """`a` is in force at least as long as `b`."""
    return a.expires_at is None or (b.expires_at is not None and a.expires_at >= b.expires_at)


def label(t: TMR) -> str:
    return f"{t.id} ({t.describe()}, priority {t.priority})"


def _analyze(tmr: TMR, ordered: tuple[TMR, ...], tmrset: TMRSet) -> list[Conflict]:
    position = next(i for i, t in enumerate(ordered) if t.id == tmr.id)
    earlier, later = ordered[:position], ordered[position + 1 :]
    conflicts: list[Conflict] = []
    for other in earlier:
        if outlives(other, tmr) and covers(tmrset, other, tmr):
            same = "with the same action" if other.action is tmr.action else f"and {other.action}s it"
            conflicts.append(
                Conflict(
                    ConflictKind.SHADOWED,
                    tmr.id,
                    other.id,
                    f"{label(tmr)} never decides: the earlier {label(other)} matches everything it matches {same}",
                )
            )
            return conflicts  # shadowed: nothing later can be affected by it
    for i, other in enumerate(later):
        if (
            other.action is tmr.action
            and outlives(other, tmr)
            and covers(tmrset, other, tmr)
            and not any(t.action is not tmr.action and overlaps(tmrset, t, tmr) for t in later[:i])
        ):
            conflicts.append(
                Conflict(
                    ConflictKind.REDUNDANT,
                    tmr.id,
                    other.id,
                    f"{label(tmr)} is redundant: {label(other)} already {other.action}s everything it matches "
                    "and no TMR in between decides otherwise",
                )
            )
            break
    for other in later:
        if other.origin is Origin.ADMIN and other.action is not tmr.action and overlaps(tmrset, tmr, other):
            conflicts.append(
                Conflict(
                    ConflictKind.OVERRIDES_ADMIN,
                    tmr.id,
                    other.id,
                    f"{label(tmr)} comes before the administrator's {label(other)} and would {tmr.action} part "
                    f"of the traffic that TMR {other.action}s",
                )
            )
    return conflicts


def conflicts_of(tmr: TMR, tmrset: TMRSet, at: datetime | None = None) -> list[Conflict]:
    """Conflicts of `tmr` placed into `tmrset` (replacing a TMR with the same id, else after those of equal
    priority), ignoring TMRs no longer active at `at`: shadowed first, then redundant, then overrides."""
    placed = tmrset.without(tmr.id).with_tmr(tmr)
    ordered = placed.tmrs if at is None else tuple(t for t in placed.tmrs if t.id == tmr.id or t.is_active(at))
    return _analyze(tmr, ordered, placed)


def analyze_tmrset(tmrset: TMRSet, at: datetime | None = None) -> list[Conflict]:
    """Every TMR of `tmrset` that never decides because an earlier one matches everything it matches (the input
    of a reprioritize recommender), in evaluation order. TMRs expired at `at` are left out."""
    ordered = tmrset.tmrs if at is None else tmrset.active(at)
    conflicts: list[Conflict] = []
    for tmr in ordered:
        conflicts.extend(c for c in _analyze(tmr, ordered, tmrset) if c.kind is ConflictKind.SHADOWED)
    return conflicts
