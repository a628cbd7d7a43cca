"""Network vocabulary: transport protocols, port ranges and addresses."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from vmshadow.domain.errors import InputError, Issue

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Protocol(StrEnum):
    """Transport protocol a TMR matches. Values are the file, API, database and nftables spelling."""

    ANY = "any"
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    ICMPV6 = "icmpv6"

    @property
    def number(self) -> int | None:
        return _IANA.get(self)

    @classmethod
    def from_number(cls, number: int) -> Protocol | None:
        """The protocol for an IANA number, or None when TMRs cannot name it."""
        for proto, value in _IANA.items():
            if value == number:
                return proto
        return None

    @property
    def has_ports(self) -> bool:
        return self in (Protocol.TCP, Protocol.UDP)

    def matches(self, number: int) -> bool:
        return self is Protocol.ANY or _IANA.get(self) == number


_IANA = {Protocol.TCP: 6, Protocol.UDP: 17, Protocol.ICMP: 1, Protocol.ICMPV6: 58}


@dataclass(frozen=True, slots=True, order=True)
class PortRange:
    """An inclusive range of ports; a single port is a range of one."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= 65535:
            raise ValueError(f"bad port range {self.first}-{self.last}")

    @classmethod
    def single(cls, port: int) -> PortRange:
        return cls(port, port)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def ports_contain(ports: tuple[PortRange, ...], port: int) -> bool:
    """True when `port` is in one of `ports`; an empty tuple means every port."""
    return not ports or any(port in r for r in ports)


def normalize_ports(ports: tuple[PortRange, ...] | list[PortRange]) -> tuple[PortRange, ...]:
    """Sorted, with overlapping and adjacent ranges merged, so equal sets compare equal."""
    merged: list[PortRange] = []
    for r in sorted(ports):
        if merged and r.first <= merged[-1].last + 1:
            last = merged[-1]
            merged[-1] = PortRange(last.first, max(last.last, r.last))
        else:
            merged.append(r)
    return tuple(merged)


def parse_ports(texts: Sequence[str], source: str) -> tuple[PortRange, ...]:
    """Ports written as ``"22"`` or ``"8000-8080"``, normalised; no text means every port. Every bad entry is
    reported (as ``ports[i]``) in one `InputError`."""
    ranges, issues = [], []
    for i, text in enumerate(texts):
        first, _, last = text.strip().partition("-")
        try:
            ranges.append(PortRange(int(first), int(last or first)))
        except ValueError:
            issues.append(Issue(source=source, field=f"ports[{i}]", message=f"{text.strip()!r} is not a port or range"))
    if issues:
        raise InputError(issues)
    return normalize_ports(ranges)


def format_ports(ports: tuple[PortRange, ...]) -> str:
    return ",".join(str(r) for r in ports) if ports else "any"


def host_network(address: IPAddress) -> IPNetwork:
    """The single-address network of `address` (/32 or /128)."""
    return ipaddress.ip_network(address)


def is_unicast(address: IPAddress) -> bool:
    """False for multicast, broadcast and unspecified addresses, which no scan or session targets.

    On the integer (ipaddress's `is_multicast` and `is_unspecified` cost microseconds, and detectors ask per flow):
    IPv4 multicast is 224.0.0.0/4, broadcast 255.255.255.255; IPv6 multicast is ff00::/8; unspecified is 0."""
    value = int(address)
    if isinstance(address, ipaddress.IPv4Address):
        return value >> 28 != 0xE and value != 0 and value != 0xFFFFFFFF
    return value >> 120 != 0xFF and value != 0


_TEXTS_V4: dict[int, str] = {}
_TEXTS_V6: dict[int, str] = {}
MAX_TEXTS = 65_536  # per family; a full memo starts over (a spoofed flood would otherwise grow it without bound)


def address_text(address: IPAddress) -> str:
    """`str(address)`, remembered for the last addresses asked (per family, at most `MAX_TEXTS`).

    State keys are built from addresses for every flow, and several detectors ask for the same flow's addresses:
    a remembered text costs ~0.1 us, against 0.2 us to print an IPv4 address and 2.7 us for IPv6 (`str()`)."""
    value = int(address)
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:  # the integer leaves the zone out (fe80::1%eth0)
            return str(address)
        texts = _TEXTS_V6
    else:
        texts = _TEXTS_V4
    text = texts.get(value)
    if text is None:
        if len(texts) >= MAX_TEXTS:
            texts.clear()
        text = texts[value] = socket.inet_ntoa(value.to_bytes(4, "big")) if texts is _TEXTS_V4 else str(address)
    return text
