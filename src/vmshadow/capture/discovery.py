"""VMN discovery on a real host: the guests' interfaces already enslaved to a bridge (libvirt/KVM style).

Every tap (``tun`` kind) or veth port of the bridge is one VMN's host-side interface; other ports (a physical
uplink, a VLAN, a bond, a VXLAN) are not VMNs and are skipped. A VMN is named

1. by the mapping file, when one of its ``interfaces`` is the port (the VMN map file format of
   docs/tmr-format.md; its ``macs`` and ``addresses`` are added to what is discovered, and a VMN listing several
   ports becomes one VMN with all of them), else
2. after the interface: the lab's ``vmsv-<name>`` gives ``<name>``, a libvirt ``vnet3`` gives ``vnet3`` (a name
   that does not start with a letter gets ``vmn-`` in front).

MACs are the guest's, not the port's: the unicast addresses the bridge has learned on the port (so a guest that
has not sent anything for the bridge's ageing time, 300 s by default, has none), plus, for a libvirt tap whose MAC
starts with ``fe:``, the same MAC starting with ``52:`` (libvirt gives the tap the guest's MAC with the first octet
set to ``fe``; ``52:54:00`` is QEMU's and libvirt's default prefix, so this is a guess the bridge confirms once the
guest sends). Addresses come only from the mapping file.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vmshadow.config.vmn_file import load_vmn_file
from vmshadow.domain.errors import BackendUnavailableError, InputError, Issue
from vmshadow.domain.net import IPAddress
from vmshadow.domain.vmn import VMN

VMN_PORT_KINDS = frozenset({"tun", "veth"})
LAB_HOST_PREFIX = "vmsv-"
NUD_PERMANENT = 0x80
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


def discover_vmns(bridge: str, mapping_file: str | Path | None = None) -> list[VMN]:
    """The VMNs whose host-side interfaces are ports of `bridge`, sorted by name (see the module doc)."""
    mapping = load_vmn_file(mapping_file) if mapping_file is not None else None
    by_interface = {i: v for v in (mapping.vmns if mapping else ()) for i in v.interfaces}
    with IPRoute() as ipr:
        bridge_link = _bridge(ipr, bridge)
        bridge_idx = bridge_link["index"]
        ports = [link for link in ipr.get_links() if link.get_attr("IFLA_MASTER") == bridge_idx]
        learned: dict[int, list[str]] = {}
        for entry in ipr.fdb("dump"):
            if entry.get_attr("NDA_MASTER") != bridge_idx or entry["state"] & NUD_PERMANENT:
                continue
            mac = str(entry.get_attr("NDA_LLADDR") or "").lower()
            if mac and not int(mac[:2], 16) & 1:  # unicast only
                learned.setdefault(entry["ifindex"], []).append(mac)

    found: dict[str, tuple[list[str], list[IPAddress], list[str]]] = {}
    for port in sorted(ports, key=lambda link: link.get_attr("IFLA_IFNAME")):
        kind = port.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        if kind not in VMN_PORT_KINDS:
            continue
        ifname = str(port.get_attr("IFLA_IFNAME"))
        mapped = by_interface.get(ifname)
        name = mapped.name if mapped is not None else name_from_interface(ifname)
        macs, addresses, interfaces = found.setdefault(name, ([], [], []))
        interfaces.append(ifname)
        candidates = list(learned.get(port["index"], []))
        port_mac = str(port.get_attr("IFLA_ADDRESS") or "").lower()
        if kind == "tun" and port_mac.startswith("fe:"):
            candidates.append(guest_mac_from_libvirt_tap(port_mac))
        if mapped is not None:
            candidates.extend(mapped.macs)
            addresses.extend(a for a in mapped.addresses if a not in addresses)
        macs.extend(m for m in candidates if m not in macs)
    return [
        VMN(name=name, macs=tuple(macs), addresses=tuple(addresses), interfaces=tuple(interfaces))
        for name, (macs, addresses, interfaces) in sorted(found.items())
    ]


def name_from_interface(ifname: str) -> str:
    """A VMN name for an unmapped port: the lab's ``vmsv-`` prefix removed, ``vmn-`` added if needed."""
    name = ifname.removeprefix(LAB_HOST_PREFIX) or ifname
    if not _NAME.match(name):
        name = "vmn-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return name


def guest_mac_from_libvirt_tap(tap_mac: str) -> str:
    """libvirt sets a tap's first octet to ``fe``; the guest's is most often ``52`` (``52:54:00:...``)."""
    return "52" + tap_mac.lower()[2:]


def _bridge(ipr: Any, name: str) -> Any:
    try:
        link = ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            raise InputError(Issue("discovery", f"no bridge {name!r} on this host", field="bridge")) from exc
        raise BackendUnavailableError(f"cannot read the links: {exc}") from exc
    if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
        raise InputError(Issue("discovery", f"{name!r} is not a bridge", field="bridge"))
    return link
