"""VMNs and groups: the names TMRs are written in."""

from __future__ import annotations

from dataclasses import dataclass, field

from vmshadow.domain.net import IPAddress, IPNetwork


@dataclass(frozen=True, slots=True)
class VMN:
    """A virtual machine node: a guest known by its host-side MACs and its addresses."""

    name: str
    macs: tuple[str, ...] = ()
    addresses: tuple[IPAddress, ...] = ()
    interfaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "macs", tuple(m.lower() for m in self.macs))


@dataclass(frozen=True, slots=True)
class Group:
    """A named set of VMNs and/or networks."""

    name: str
    vmns: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class VMNMap:
    """Identifies the VMN behind an address or MAC (MAC first: addresses can be spoofed or shared)."""

    vmns: tuple[VMN, ...] = ()
    _by_mac: dict[str, str] = field(init=False, repr=False, compare=False)
    _by_ip: dict[IPAddress, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_mac", {m: v.name for v in self.vmns for m in v.macs})
        object.__setattr__(self, "_by_ip", {a: v.name for v in self.vmns for a in v.addresses})

    def identify(self, mac: str | None, address: IPAddress | None) -> str | None:
        if mac:
            name = self._by_mac.get(mac.lower())
            if name is not None:
                return name
        if address is not None:
            return self._by_ip.get(address)
        return None

    def get(self, name: str) -> VMN | None:
        for v in self.vmns:
            if v.name == name:
                return v
        return None

    def __len__(self) -> int:
        return len(self.vmns)
