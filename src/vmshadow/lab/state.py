"""What a lab is made of: its plan (pure: names, addresses, MACs) and the state file that records it.

Naming, for a lab with tag ``t`` (the default lab has no tag)::

    host name       vm<n> | dns | web | c2           t-vm<n> | t-dns | ...   (at most 10 characters)
    namespace       vms-<host name>
    host interface  vmsv-<host name>    the VMN's host-side interface, a port of the bridge (like a tap)
    guest interface eth0                inside the namespace
    shadow port     vmss-<host name>    VMNs only (capture.shadow_port)

Addresses: 198.18.0.0/24, VMN n at .(10+n), dns .2, web .3, c2 .4; no gateway, no default route.
MACs: VMN n 02:00:c6:12:00:<n>, outside hosts 02:00:c6:12:ff:<last address octet> (locally administered).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from vmshadow.capture.shadow_port import shadow_interface_name
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.vmn import VMN, VMNMap

STATE_VERSION = 1
DEFAULT_STATE_DIR = Path("/run/vmshadow")
"""tmpfs: it lives as long as the namespaces and links it describes (both are gone after a reboot)."""
DEFAULT_BRIDGE = "vmsbr0"
LAB_SUBNET = ipaddress.IPv4Network("198.18.0.0/24")
VMN_HOST_OFFSET = 10
MAX_VMNS = 100
OUTSIDE_HOSTS = (("dns", 2), ("web", 3), ("c2", 4))
"""Outside hosts: a DNS resolver, a web server, a C2/exfiltration target (later issues run the services)."""
NAMESPACE_PREFIX = "vms-"
HOST_LINK_PREFIX = "vmsv-"
GUEST_INTERFACE = "eth0"

_TAG = re.compile(r"^[a-z][a-z0-9]{0,3}$")
_BRIDGE = re.compile(r"^vms[A-Za-z0-9_.-]{1,12}$")
_BASE_NAMES = r"(?:vm\d{1,3}|dns|web|c2)"


class HostRole(StrEnum):
    VMN = "vmn"
    OUTSIDE = "outside"


@dataclass(frozen=True, slots=True)
class LabHost:
    """One namespace of the lab: a VMN or an outside host."""

    name: str
    role: HostRole
    namespace: str
    host_interface: str
    address: ipaddress.IPv4Interface
    mac: str
    shadow_interface: str | None = None
    guest_interface: str = GUEST_INTERFACE

    def vmn(self) -> VMN:
        return VMN(name=self.name, macs=(self.mac,), addresses=(self.address.ip,), interfaces=(self.host_interface,))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": str(self.role),
            "namespace": self.namespace,
            "host_interface": self.host_interface,
            "guest_interface": self.guest_interface,
            "shadow_interface": self.shadow_interface,
            "addresses": [str(self.address)],
            "mac": self.mac,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabHost:
        return cls(
            name=str(data["name"]),
            role=HostRole(data["role"]),
            namespace=str(data["namespace"]),
            host_interface=str(data["host_interface"]),
            guest_interface=str(data.get("guest_interface", GUEST_INTERFACE)),
            shadow_interface=data.get("shadow_interface"),
            address=ipaddress.IPv4Interface(data["addresses"][0]),
            mac=str(data["mac"]),
        )


@dataclass(frozen=True, slots=True)
class LabState:
    """A lab as planned and recorded: the bridge, the hosts, and how shadow ports are fed."""

    tag: str
    bridge: str
    hosts: tuple[LabHost, ...]
    both_directions: bool = False
    snaplen: int | None = None

    @property
    def vmns(self) -> tuple[LabHost, ...]:
        return tuple(h for h in self.hosts if h.role is HostRole.VMN)

    @property
    def outside(self) -> tuple[LabHost, ...]:
        return tuple(h for h in self.hosts if h.role is HostRole.OUTSIDE)

    def host(self, name: str) -> LabHost:
        """A host by name or namespace; `InputError` naming the hosts there are."""
        for h in self.hosts:
            if name in (h.name, h.namespace):
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise InputError(Issue("lab", f"no host {name!r} in the lab (hosts: {known})", field="vmn"))

    def vmn_map(self) -> VMNMap:
        return VMNMap(tuple(h.vmn() for h in self.vmns))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "tag": self.tag,
            "bridge": self.bridge,
            "both_directions": self.both_directions,
            "snaplen": self.snaplen,
            "hosts": [h.to_json() for h in self.hosts],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported lab state version {data.get('version')!r}")
        return cls(
            tag=str(data["tag"]),
            bridge=str(data["bridge"]),
            hosts=tuple(LabHost.from_json(h) for h in data["hosts"]),
            both_directions=bool(data.get("both_directions", False)),
            snaplen=data.get("snaplen"),
        )


def host_name(tag: str, base: str) -> str:
    return f"{tag}-{base}" if tag else base


def lab_name_pattern(tag: str) -> re.Pattern[str]:
    """Host names a lab with this tag may have: how `Lab.down` finds its objects when the state file is lost."""
    prefix = re.escape(tag + "-") if tag else ""
    return re.compile(rf"^{prefix}{_BASE_NAMES}$")


def plan_lab(
    n_vmns: int,
    bridge: str = DEFAULT_BRIDGE,
    *,
    tag: str = "",
    both_directions: bool = False,
    snaplen: int | None = None,
) -> LabState:
    """The lab `Lab.up` builds, without touching the kernel; every input problem is reported at once."""
    issues = []
    if tag and not _TAG.match(tag):
        issues.append(Issue("lab", f"tag {tag!r}: a lowercase letter, then at most 3 letters or digits", field="tag"))
    if not _BRIDGE.match(bridge) or bridge.startswith((HOST_LINK_PREFIX, "vmss-")):
        issues.append(
            Issue(
                "lab",
                f"bridge {bridge!r}: must start with 'vms', be at most 15 characters of letters, digits, '_.-', "
                "and not start with 'vmsv-' or 'vmss-'",
                field="bridge",
            )
        )
    if not 1 <= n_vmns <= MAX_VMNS:
        issues.append(Issue("lab", f"{n_vmns} VMNs: a lab has 1 to {MAX_VMNS}", field="vmns"))
    if issues:
        raise InputError(issues)
    hosts = []
    for n in range(1, n_vmns + 1):
        name = host_name(tag, f"vm{n}")
        hosts.append(
            LabHost(
                name=name,
                role=HostRole.VMN,
                namespace=NAMESPACE_PREFIX + name,
                host_interface=HOST_LINK_PREFIX + name,
                address=ipaddress.IPv4Interface(f"{LAB_SUBNET[VMN_HOST_OFFSET + n]}/{LAB_SUBNET.prefixlen}"),
                mac=f"02:00:c6:12:00:{n:02x}",
                shadow_interface=shadow_interface_name(name),
            )
        )
    for base, last in OUTSIDE_HOSTS:
        name = host_name(tag, base)
        hosts.append(
            LabHost(
                name=name,
                role=HostRole.OUTSIDE,
                namespace=NAMESPACE_PREFIX + name,
                host_interface=HOST_LINK_PREFIX + name,
                address=ipaddress.IPv4Interface(f"{LAB_SUBNET[last]}/{LAB_SUBNET.prefixlen}"),
                mac=f"02:00:c6:12:ff:{last:02x}",
            )
        )
    return LabState(tag=tag, bridge=bridge, hosts=tuple(hosts), both_directions=both_directions, snaplen=snaplen)


def state_file(state_dir: Path, tag: str) -> Path:
    return state_dir / (f"lab-{tag}.json" if tag else "lab.json")


def read_state(path: Path) -> LabState | None:
    """The recorded lab, or None when there is none or the file cannot be read (then `down` scans by name)."""
    try:
        return LabState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def write_state(path: Path, state: LabState) -> None:
    """Atomically (a crash leaves the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(state.to_json(), out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
