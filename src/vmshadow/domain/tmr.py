"""TMRs, the TMRSet and its first-match-by-priority evaluator.

Priorities: a lower number is evaluated first; equal priorities keep the order in which the TMRs were given.
The default action for a flow is the source VMN's (TMRs govern what VMNs send), else the destination VMN's,
else the set's global default.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol as TypingProtocol

from vmshadow.domain.net import IPAddress, IPNetwork, PortRange, Protocol, format_ports, normalize_ports, ports_contain
from vmshadow.domain.vmn import VMN, Group, VMNMap


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Origin(StrEnum):
    """Who wrote a TMR. Only `admin` TMRs are written without a reviewed proposal."""

    ADMIN = "admin"
    PROPOSAL = "proposal"
    INTEL = "intel"


class EndpointKind(StrEnum):
    ANY = "any"
    VMN = "vmn"
    GROUP = "group"
    NETWORK = "network"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a TMR: any address, a VMN, a group, or a network (CIDR)."""

    kind: EndpointKind
    value: str = ""

    @classmethod
    def any(cls) -> Endpoint:
        return cls(EndpointKind.ANY)

    @classmethod
    def vmn(cls, name: str) -> Endpoint:
        return cls(EndpointKind.VMN, name)

    @classmethod
    def group(cls, name: str) -> Endpoint:
        return cls(EndpointKind.GROUP, name)

    @classmethod
    def network(cls, network: IPNetwork | IPAddress | str) -> Endpoint:
        return cls(EndpointKind.NETWORK, str(ipaddress.ip_network(network, strict=False)))

    @property
    def as_network(self) -> IPNetwork:
        if self.kind is not EndpointKind.NETWORK:
            raise ValueError(f"{self} is not a network")
        return _network(self.value)

    def __str__(self) -> str:
        return "any" if self.kind is EndpointKind.ANY else self.value


@functools.lru_cache(maxsize=4096)
def _network(value: str) -> IPNetwork:
    # parsed once per spelling: the evaluator asks a network endpoint for its network on every flow it replays
    return ipaddress.ip_network(value)


@dataclass(frozen=True, slots=True)
class TMR:
    """A transmission management rule."""

    id: str
    priority: int
    src: Endpoint
    dst: Endpoint
    action: Action
    protocol: Protocol = Protocol.ANY
    ports: tuple[PortRange, ...] = ()
    expires_at: datetime | None = None
    origin: Origin = Origin.ADMIN
    comment: str = ""

    def __post_init__(self) -> None:
        if self.ports and not self.protocol.has_ports:
            raise ValueError(f"TMR {self.id}: ports need protocol tcp or udp, not {self.protocol}")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError(f"TMR {self.id}: expires_at must be timezone-aware")

    def is_active(self, at: datetime) -> bool:
        return self.expires_at is None or at < self.expires_at

    def describe(self) -> str:
        text = f"{self.action} {self.src} -> {self.dst} {self.protocol}"
        if self.ports:
            text += f"/{format_ports(self.ports)}"
        return text


class PacketKey(TypingProtocol):
    """What the evaluator needs to know about a flow."""

    @property
    def src_ip(self) -> IPAddress: ...
    @property
    def dst_ip(self) -> IPAddress: ...
    @property
    def protocol(self) -> int: ...
    @property
    def dst_port(self) -> int: ...
    @property
    def src_vmn(self) -> str | None: ...
    @property
    def dst_vmn(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    tmr_id: str | None  # None: the default action decided


@dataclass(frozen=True, slots=True)
class TMRSet:
    """An ordered, validated set of TMRs with default actions. Build it with `TMRSet.build`."""

    tmrs: tuple[TMR, ...] = ()
    vmns: tuple[VMN, ...] = ()
    groups: tuple[Group, ...] = ()
    default_action: Action = Action.ALLOW
    vmn_defaults: Mapping[str, Action] = field(default_factory=dict)
    _vmn_index: dict[str, VMN] = field(init=False, repr=False, compare=False)
    _group_index: dict[str, Group] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(t for _, t in sorted(enumerate(self.tmrs), key=lambda it: (it[1].priority, it[0])))
        object.__setattr__(self, "tmrs", ordered)
        object.__setattr__(self, "_vmn_index", {v.name: v for v in self.vmns})
        object.__setattr__(self, "_group_index", {g.name: g for g in self.groups})
        problems = list(self._problems())
        if problems:
            raise ValueError("; ".join(problems))

    def _problems(self) -> Iterable[str]:
        seen: set[str] = set()
        for t in self.tmrs:
            if t.id in seen:
                yield f"duplicate TMR id {t.id!r}"
            seen.add(t.id)
            for side in (t.src, t.dst):
                if side.kind is EndpointKind.VMN and side.value not in self._vmn_index:
                    yield f"TMR {t.id}: unknown VMN {side.value!r}"
                if side.kind is EndpointKind.GROUP and side.value not in self._group_index:
                    yield f"TMR {t.id}: unknown group {side.value!r}"
        for g in self.groups:
            for name in g.vmns:
                if name not in self._vmn_index:
                    yield f"group {g.name}: unknown VMN {name!r}"
        for name in self.vmn_defaults:
            if name not in self._vmn_index:
                yield f"default action for unknown VMN {name!r}"

    @property
    def vmn_map(self) -> VMNMap:
        return VMNMap(self.vmns)

    def vmn(self, name: str) -> VMN | None:
        return self._vmn_index.get(name)

    def group(self, name: str) -> Group | None:
        return self._group_index.get(name)

    def with_tmr(self, tmr: TMR) -> TMRSet:
        return replace(self, tmrs=(*self.tmrs, tmr))

    def without(self, tmr_id: str) -> TMRSet:
        return replace(self, tmrs=tuple(t for t in self.tmrs if t.id != tmr_id))

    def active(self, at: datetime) -> tuple[TMR, ...]:
        return tuple(t for t in self.tmrs if t.is_active(at))

    def repeats(self, at: datetime) -> dict[str, str]:
        """TMRs that can never decide a packet from `at` on, because an earlier TMR (priority order) with the same
        source, destination, protocol and ports lasts at least as long: the repeat's id -> the earlier TMR's id
        (the longest-lasting one). Exact on those fields only; wider earlier TMRs are `refinement.conflicts`' job."""
        earliest: dict[tuple[Endpoint, Endpoint, Protocol, tuple[PortRange, ...]], TMR] = {}
        out: dict[str, str] = {}
        for t in self.tmrs:
            if not t.is_active(at):
                continue
            key = (t.src, t.dst, t.protocol, tuple(normalize_ports(t.ports)))
            first = earliest.get(key)
            if first is not None and (
                first.expires_at is None or (t.expires_at is not None and t.expires_at <= first.expires_at)
            ):
                out[t.id] = first.id
            else:
                earliest[key] = t
        return out

    def default_for(self, key: PacketKey) -> Action:
        for name in (key.src_vmn, key.dst_vmn):
            if name is not None and name in self.vmn_defaults:
                return self.vmn_defaults[name]
        return self.default_action

    def endpoint_matches(self, endpoint: Endpoint, address: IPAddress, vmn: str | None) -> bool:
        kind = endpoint.kind
        if kind is EndpointKind.ANY:
            return True
        if kind is EndpointKind.NETWORK:
            return address in endpoint.as_network
        if kind is EndpointKind.VMN:
            return self._vmn_has(endpoint.value, address, vmn)
        group = self._group_index[endpoint.value]
        return any(self._vmn_has(n, address, vmn) for n in group.vmns) or any(address in net for net in group.networks)

    def _vmn_has(self, name: str, address: IPAddress, vmn: str | None) -> bool:
        return vmn == name or address in self._vmn_index[name].addresses

    def matches(self, tmr: TMR, key: PacketKey) -> bool:
        return (
            tmr.protocol.matches(key.protocol)
            and (not tmr.ports or ports_contain(tmr.ports, key.dst_port))
            and self.endpoint_matches(tmr.src, key.src_ip, key.src_vmn)
            and self.endpoint_matches(tmr.dst, key.dst_ip, key.dst_vmn)
        )

    def evaluate(self, key: PacketKey, at: datetime) -> Verdict:
        """First active TMR in priority order that matches decides; otherwise the default action."""
        for tmr in self.tmrs:
            if tmr.is_active(at) and self.matches(tmr, key):
                return Verdict(tmr.action, tmr.id)
        return Verdict(self.default_for(key), None)
