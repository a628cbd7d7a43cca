"""Shadow ports: a per-VMN interface that receives a kernel copy of everything the VMN sends.

A VMN's host-side interface (tap or veth) gets a ``clsact`` qdisc; on its *ingress* hook (what the VMN sends) a
u32 match-all filter runs a ``mirred egress mirror`` action whose target is the VMN's shadow port. tc ingress runs
before the bridge and so before any nftables bridge rule: traffic a TMR drops is still copied (DESIGN.md §2,
property 1). With ``both_directions`` the same action sits on the *egress* hook too (what the VMN receives).

The shadow port is a veth pair in the root namespace: the mirror sends copies out of ``vmss-<vmn>`` (see
`shadow_interface_name`) and they arrive on its peer ``vmsr-<vmn>`` (`reader_interface_name`), where the SAE reads
them. Readers must sit on the receiving end: nfstream's capture only sees packets arriving on an interface, not
packets leaving it, so a ``dummy`` or ``ifb`` sink (where copies only leave) is invisible to it (measured). The
reader end has no IPv4 or IPv6 address, so the kernel drops the copies right after packet sockets saw them; the
sending end keeps its IPv6 link-local address so the SAE can push a heartbeat through the port (flows/live.py).
Its alias (``ip link show`` prints it) records the VMN, the host-side interface and the snap length, so a fresh
process finds existing shadow ports without any file (`find_attached`).

Filters are ours when they sit at our priority on our hook and mirror into a shadow port:
ingress prio 49152 (`Direction.OUTGOING`), egress prio 49153 (`Direction.INCOMING`). The priorities differ because
u32 lists every filter of a clsact qdisc that shares a priority under both hooks. In front of each mirror sits the
VMN's copy budget (capture/budget.py, an eBPF program: this kernel has no ``act_police``): on the hook's tcx list
where the kernel has tcx (a packet over the budget then skips the clsact filters), else as a ``cls_bpf`` filter one
priority earlier (49150 ingress, 49151 egress). Copies over the budget are shed in the kernel and counted
(`shed_counters`), while the live packet always goes on.

Counters (`mirror_counters`) are the mirred action's statistics: packets count GSO segments (about the wire
packets), bytes count ``skb->len`` of what was copied, so headers are counted once per GSO super-packet, and on the
outgoing hook (tc ingress) without the 14-byte Ethernet header. A reader on the shadow port receives the
super-packets themselves (up to 64 KB); see docs/lab.md.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vmshadow.capture import budget as copy_budget
from vmshadow.capture.budget import CopyBudget, ShedCounters
from vmshadow.capture.netlink import find_link, ifname, kernel_error, link_kind
from vmshadow.domain.errors import BackendUnavailableError, InputError, Issue

SHADOW_PREFIX = "vmss-"
IFNAME_MAX = 15
SHADOW_KINDS = ("veth",)
READER_PREFIX = "vmsr-"
"""A veth pair: copies leave the first end and arrive at the reader end (see the module doc)."""

ETH_P_ALL = 0x0003
TC_INGRESS_PARENT = 0xFFFFFFF2
TC_EGRESS_PARENT = 0xFFFFFFF3
U32_CLASSID = 0x10001  # pyroute2's u32 needs a target; a clsact hook ignores it
TCA_EGRESS_MIRROR = 2
ALIAS_TAG = "vmshadow-shadow-port"

_ADDR_GEN_MODE_NONE = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")  # the VMN name rule of config/vmn_file.py
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class Direction(StrEnum):
    """Which traffic of a VMN is copied, named from the VMN's side."""

    OUTGOING = "outgoing"
    """What the VMN sends: tc ingress of its host-side interface, before the bridge and any TMR."""
    INCOMING = "incoming"
    """What the VMN receives: tc egress of its host-side interface, after the bridge (so after TMRs)."""


_HOOKS: dict[Direction, tuple[int, int]] = {
    Direction.OUTGOING: (TC_INGRESS_PARENT, 49152),
    Direction.INCOMING: (TC_EGRESS_PARENT, 49153),
}
_BUDGET_PRIO: dict[Direction, int] = {Direction.OUTGOING: 49150, Direction.INCOMING: 49151}  # before the mirror
_TCX_HOOK: dict[Direction, str] = {Direction.OUTGOING: "ingress", Direction.INCOMING: "egress"}
BUDGET_ON_TCX = True
"""Put copy budgets on tcx where the kernel has it (False: cls_bpf filters, what kernels before 6.6 get; tests)."""
_TCA_BPF_ID = 11  # pyroute2 0.9.7 does not name it
DEFAULT_BUDGET = CopyBudget(pps=2_000, burst=500)
"""Copies a shadow port takes by default (2,000/s, bursts of 500); the rest are shed and counted (docs/live.md)."""


@dataclass(frozen=True, slots=True)
class ShadowPort:
    """One VMN's shadow port and the mirrors that feed it.

    `directions` is empty when the shadow port exists but nothing feeds it any more (the host-side interface went
    away, e.g. the guest stopped); `detach` removes such a port. `snaplen` is a setting for readers of the port
    (a tc mirror always copies whole packets): `None` means whole packets. `budget` is the kernel-side copy budget
    in front of the mirrors (capture/budget.py), `None` when every packet is copied.
    """

    vmn: str
    host_interface: str
    shadow_interface: str
    host_ifindex: int | None
    shadow_ifindex: int
    directions: tuple[Direction, ...]
    kind: str
    snaplen: int | None = None
    budget: CopyBudget | None = None

    @property
    def reader_interface(self) -> str:
        """Where the copies arrive: the interface a reader (the SAE) opens."""
        return reader_interface_name(self.shadow_interface)

    @property
    def ifindexes(self) -> tuple[int | None, int]:
        """(host-side interface, shadow port)."""
        return (self.host_ifindex, self.shadow_ifindex)


@dataclass(frozen=True, slots=True)
class MirrorCounters:
    """The statistics of one mirred action (one direction of one shadow port)."""

    packets: int
    bytes: int
    overlimits: int = 0
    drops: int = 0


@dataclass(frozen=True, slots=True)
class _Mirror:
    host_ifindex: int
    direction: Direction
    handle: int
    shadow_ifindex: int
    counters: MirrorCounters


def shadow_interface_name(vmn: str) -> str:
    """``vmss-<vmn>`` when it fits in 15 characters, else ``vmss-<first 4>-<5 hex of sha256>`` (deterministic)."""
    room = IFNAME_MAX - len(SHADOW_PREFIX)
    if len(vmn) <= room and _IFNAME.match(vmn):
        return SHADOW_PREFIX + vmn
    digest = hashlib.sha256(vmn.encode()).hexdigest()[:5]
    head = re.sub(r"[^A-Za-z0-9_.-]", "", vmn)[: room - len(digest) - 1]
    return f"{SHADOW_PREFIX}{head}-{digest}"


def reader_interface_name(shadow_interface: str) -> str:
    """The receiving end of a shadow port's veth pair: ``vmsr-`` + the same suffix."""
    return READER_PREFIX + shadow_interface[len(SHADOW_PREFIX) :]


def attach(
    vmn_name: str,
    host_interface: str,
    *,
    both_directions: bool = False,
    snaplen: int | None = None,
    budget: CopyBudget | None = DEFAULT_BUDGET,
) -> ShadowPort:
    """Give `vmn_name` a shadow port fed from `host_interface`; safe to call again (nothing is duplicated).

    The call is declarative: afterwards the port is fed in exactly the requested directions (a second call
    without `both_directions` removes an incoming copy a first call added), under exactly `budget` copies per
    second (`None`: no budget, every packet copied). A mirror attached before budgets existed, or with another
    budget, gets the requested one: the budget goes in front of the mirror first, so no copy is duplicated and
    none goes unbudgeted. A VMN has one host-side interface per shadow port: attaching it to another interface
    while the first still feeds it is an `InputError`.
    """
    _check_attach_input(vmn_name, host_interface, snaplen)
    wanted = (Direction.OUTGOING, Direction.INCOMING) if both_directions else (Direction.OUTGOING,)
    shadow_name = shadow_interface_name(vmn_name)
    with _ipr() as ipr:
        host = find_link(ipr, host_interface)
        if host is None:
            raise InputError(Issue("capture", f"no interface {host_interface!r} in this namespace", field="host"))
        if host.get_attr("IFLA_IFNAME").startswith(SHADOW_PREFIX):
            raise InputError(Issue("capture", f"{host_interface} is a shadow port, not a VMN's interface"))
        host_idx: int = host["index"]
        shadow = find_link(ipr, shadow_name)
        if shadow is not None:
            _check_owner(ipr, shadow, vmn_name, host_interface, host_idx)
            kind = link_kind(shadow) or "?"
        else:
            kind = _create_shadow(ipr, shadow_name)
            shadow = find_link(ipr, shadow_name)
            assert shadow is not None
        shadow_idx: int = shadow["index"]
        _netlink(
            "label the shadow port",
            ipr.link,
            "set",
            index=shadow_idx,
            ifalias=_alias(vmn_name, host_interface, snaplen),
            state="up",
        )
        try:
            ipr.tc("add", "clsact", host_idx)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise kernel_error(f"add clsact to {host_interface}", exc) from exc
        on_tcx = BUDGET_ON_TCX and copy_budget.tcx_available()
        if budget is not None:
            _put_budget(ipr, host_idx, wanted, budget, on_tcx)  # before any new mirror: no copy goes unbudgeted
        present = {m.direction: m for m in _mirrors_on(ipr, host_idx) if m.shadow_ifindex == shadow_idx}
        for direction in Direction:
            if direction in wanted and direction not in present:
                _add_mirror(ipr, host_idx, direction, shadow_idx)
            elif direction not in wanted and direction in present:
                _delete_mirror(ipr, present[direction])
        for found in _budgets_on(ipr, host_idx):  # after the mirrors they guarded are gone, or their successor came
            if budget is None or found.direction not in wanted or found.on_tcx != on_tcx:
                _delete_budget(ipr, found)
    return ShadowPort(
        vmn=vmn_name,
        host_interface=host_interface,
        shadow_interface=shadow_name,
        host_ifindex=host_idx,
        shadow_ifindex=shadow_idx,
        directions=wanted,
        kind=kind,
        snaplen=snaplen,
        budget=budget,
    )


def detach(port: ShadowPort | str, *, keep_interface: bool = False) -> bool:
    """Remove a shadow port and every mirror feeding it; True if anything was there. Safe to call again.

    `port` is a `ShadowPort` or a shadow interface name. The host-side interface keeps its clsact qdisc while
    other filters remain on it; an empty one is removed. With `keep_interface` only the mirrors and the budget go:
    the shadow port's interfaces stay (a reader's socket stays open) and a later `attach` feeds them again.
    """
    name = port.shadow_interface if isinstance(port, ShadowPort) else port
    if not name.startswith(SHADOW_PREFIX):
        raise InputError(Issue("capture", f"{name!r} is not a shadow port (names start with {SHADOW_PREFIX})"))
    with _ipr() as ipr:
        shadow = find_link(ipr, name)
        if shadow is None:
            return False
        shadow_idx: int = shadow["index"]
        feeding = [m for m in _all_mirrors(ipr) if m.shadow_ifindex == shadow_idx]
        for mirror in feeding:
            _delete_mirror(ipr, mirror)
        for host_idx in {m.host_ifindex for m in feeding}:
            for found in _budgets_on(ipr, host_idx):
                _delete_budget(ipr, found)
            _drop_empty_clsact(ipr, host_idx)
        if not keep_interface:
            _delete_link(ipr, shadow_idx)
    return True


def find_attached() -> list[ShadowPort]:
    """Every shadow port in this namespace, with the mirrors that feed it, read from the kernel (no file)."""
    with _ipr() as ipr:
        links = list(ipr.get_links())
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
        hosts = _clsact_ifindexes(ipr)
        mirrors = [m for idx in hosts for m in _mirrors_on(ipr, idx)]
        budgets = {idx: _budgets_on(ipr, idx) for idx in hosts}
    ports = []
    for link in links:
        name = names[link["index"]]
        kind = link_kind(link)
        if not name.startswith(SHADOW_PREFIX) or kind not in SHADOW_KINDS:
            continue
        label = _parse_alias(link.get_attr("IFLA_IFALIAS"))
        feeding = [m for m in mirrors if m.shadow_ifindex == link["index"]]
        host_idx = feeding[0].host_ifindex if feeding else None
        host_name = names.get(host_idx, "") if host_idx is not None else label.get("host", "")
        guards = budgets.get(host_idx, []) if host_idx is not None else []
        ports.append(
            ShadowPort(
                vmn=label.get("vmn", name[len(SHADOW_PREFIX) :]),
                host_interface=host_name,
                shadow_interface=name,
                host_ifindex=host_idx,
                shadow_ifindex=link["index"],
                directions=tuple(d for d in Direction if any(m.direction == d for m in feeding)),
                kind=kind,
                snaplen=_int_or_none(label.get("snaplen")),
                budget=min(guards, key=lambda g: _BUDGET_PRIO[g.direction]).budget if guards else None,
            )
        )
    return sorted(ports, key=lambda p: p.vmn)


def refresh(port: ShadowPort) -> ShadowPort | None:
    """The kernel's current view of `port` (by shadow interface name), or None when it is gone."""
    for found in find_attached():
        if found.shadow_interface == port.shadow_interface:
            return found
    return None


def mirror_counters(port: ShadowPort) -> dict[Direction, MirrorCounters]:
    """The tc mirred statistics per direction feeding `port` (empty when nothing feeds it).

    Packets count GSO segments, not the super-packets a reader of the shadow port receives; see the module doc.
    """
    with _ipr() as ipr:
        shadow = find_link(ipr, port.shadow_interface)
        if shadow is None:
            return {}
        host = find_link(ipr, port.host_interface) if port.host_interface else None
        candidates = _mirrors_on(ipr, host["index"]) if host is not None else _all_mirrors(ipr)
        feeding = [m for m in candidates if m.shadow_ifindex == shadow["index"]]
        if not feeding and host is not None:
            feeding = [m for m in _all_mirrors(ipr) if m.shadow_ifindex == shadow["index"]]
    totals: dict[Direction, MirrorCounters] = {}
    for m in feeding:
        seen = totals.get(m.direction, MirrorCounters(0, 0))
        totals[m.direction] = MirrorCounters(
            packets=seen.packets + m.counters.packets,
            bytes=seen.bytes + m.counters.bytes,
            overlimits=seen.overlimits + m.counters.overlimits,
            drops=seen.drops + m.counters.drops,
        )
    return totals


def shed_counters(port: ShadowPort) -> ShedCounters:
    """What the copy budget in front of `port`'s mirrors shed since it was put there (zero without a budget).

    One budget serves both directions of a port. Packets count what tc saw (a GSO super-packet is one), unlike
    the mirror's counters; see the module doc.
    """
    with _ipr() as ipr:
        host = find_link(ipr, port.host_interface) if port.host_interface else None
        guards = _budgets_on(ipr, host["index"]) if host is not None else []
    packets = nbytes = 0
    for prog_id in sorted({g.prog_id for g in guards}):
        try:
            shed = copy_budget.shed_counters(prog_id)
        except BackendUnavailableError:
            continue  # replaced or detached since the listing: its counts went with it
        packets, nbytes = packets + shed.packets, nbytes + shed.bytes
    return ShedCounters(packets=packets, bytes=nbytes)


# --- kernel access -------------------------------------------------------------------------------------------


@contextmanager
def _ipr() -> Iterator[Any]:
    if os.geteuid() != 0:
        raise BackendUnavailableError("shadow ports need root (CAP_NET_ADMIN) to change tc filters and links")
    try:
        ipr = IPRoute()
    except OSError as exc:  # pragma: no cover - netlink is always there on Linux
        raise BackendUnavailableError(f"cannot open a netlink socket: {exc}") from exc
    try:
        yield ipr
    finally:
        ipr.close()


def _netlink(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except NetlinkError as exc:
        raise kernel_error(what, exc) from exc


def _delete_link(ipr: Any, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise kernel_error(f"delete link {index}", exc) from exc


def _create_shadow(ipr: Any, name: str) -> str:
    """Create the shadow port's veth pair, quiet: no router solicitations, no addresses on the reading end."""
    reader = reader_interface_name(name)
    try:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": reader})
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            raise BackendUnavailableError("this kernel has no veth interfaces for shadow ports") from exc
        raise kernel_error(f"create shadow port {name}", exc) from exc
    reader_idx = ipr.link_lookup(ifname=reader)[0]
    # before anything is up: the kernel must never answer, solicit or report from the shadow port itself
    _netlink(f"turn off IPv6 addresses on {reader}", ipr.link, "set", index=reader_idx, af_spec=_ADDR_GEN_MODE_NONE)
    _write_sysctl(f"/proc/sys/net/ipv6/conf/{name}/router_solicitations", "0")
    # NOT disable_ipv6 on the reader: with it set, nfstream's capture there saw nothing at all (measured)
    _netlink(f"bring up {reader}", ipr.link, "set", index=reader_idx, state="up")
    return "veth"


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except OSError:
        pass  # IPv6 disabled on this host: nothing to quieten


def _check_owner(ipr: Any, shadow: Any, vmn: str, host_interface: str, host_idx: int) -> None:
    name = shadow.get_attr("IFLA_IFNAME")
    if link_kind(shadow) not in SHADOW_KINDS:
        raise InputError(Issue("capture", f"{name} exists and is not a shadow port ({link_kind(shadow)})"))
    label = _parse_alias(shadow.get_attr("IFLA_IFALIAS"))
    owner = label.get("vmn")
    if owner is not None and owner != vmn:
        raise InputError(Issue("capture", f"{name} is the shadow port of VMN {owner}, not {vmn}"))
    feeders = {m.host_ifindex for m in _all_mirrors(ipr) if m.shadow_ifindex == shadow["index"]} - {host_idx}
    if feeders:
        others = ", ".join(sorted(ifname(ipr, i) for i in feeders))
        raise InputError(
            Issue("capture", f"VMN {vmn}'s shadow port is fed by {others}; detach it before using {host_interface}")
        )


def _add_mirror(ipr: Any, host_idx: int, direction: Direction, shadow_idx: int) -> None:
    parent, prio = _HOOKS[direction]
    _netlink(
        f"add the {direction} mirror",
        ipr.tc,
        "add-filter",
        "u32",
        host_idx,
        parent=parent,
        prio=prio,
        protocol=ETH_P_ALL,
        keys=["0x0/0x0+0"],
        target=U32_CLASSID,
        action=[{"kind": "mirred", "direction": "egress", "action": "mirror", "ifindex": shadow_idx}],
    )


def _delete_mirror(ipr: Any, mirror: _Mirror) -> None:
    parent, prio = _HOOKS[mirror.direction]
    info = (prio << 16) | _htons(ETH_P_ALL)
    for handle in (mirror.handle, 0):  # the filter, then its (now empty) priority
        if handle == 0 and _has_filters(ipr, mirror.host_ifindex, mirror.direction):
            break
        try:
            ipr.tc("del-filter", index=mirror.host_ifindex, parent=parent, handle=handle, info=info)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                raise kernel_error(f"delete the {mirror.direction} mirror", exc) from exc


def _has_filters(ipr: Any, host_idx: int, direction: Direction) -> bool:
    """Whether a real filter (a u32 key node, not only the hash table of a priority) remains on the hook."""
    parent, prio = _HOOKS[direction]
    return any(f["info"] >> 16 == prio and _is_key_node(f) for f in _filters(ipr, host_idx, parent))


def _drop_empty_clsact(ipr: Any, host_idx: int) -> None:
    for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT):
        if _filters(ipr, host_idx, parent):
            return
    try:
        ipr.tc("del", "clsact", host_idx)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            raise kernel_error("remove an empty clsact qdisc", exc) from exc


def _filters(ipr: Any, host_idx: int, parent: int) -> list[Any]:
    try:
        return list(ipr.get_filters(index=host_idx, parent=parent))
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.EINVAL, errno.ENOENT):
            return []
        raise kernel_error("list tc filters", exc) from exc


def _is_key_node(msg: Any) -> bool:
    # u32 lists a priority's hash table (handle 8xx00000 and 0) beside its key nodes (handle 8xx00nnn, nnn > 0)
    return bool(msg["handle"] & 0xFFF)


def _clsact_ifindexes(ipr: Any) -> list[int]:
    try:
        qdiscs = ipr.get_qdiscs()
    except NetlinkError as exc:
        raise kernel_error("list qdiscs", exc) from exc
    return sorted({q["index"] for q in qdiscs if q.get_attr("TCA_KIND") == "clsact"})


def _all_mirrors(ipr: Any) -> list[_Mirror]:
    return [m for idx in _clsact_ifindexes(ipr) for m in _mirrors_on(ipr, idx)]


def _mirrors_on(ipr: Any, host_idx: int) -> list[_Mirror]:
    """Our mirrors on one interface: u32 at our priority on our hook with a mirred egress mirror action."""
    found = []
    for direction, (parent, prio) in _HOOKS.items():
        for msg in _filters(ipr, host_idx, parent):
            if msg["info"] >> 16 != prio or not _is_key_node(msg):
                continue
            actions = msg.get_nested("TCA_OPTIONS", "TCA_U32_ACT")
            if not actions:
                continue
            for _, action in actions["attrs"]:
                if action.get_attr("TCA_ACT_KIND") != "mirred":
                    continue
                parms = action.get_nested("TCA_ACT_OPTIONS", "TCA_MIRRED_PARMS")
                if parms is None or parms["eaction"] != TCA_EGRESS_MIRROR:
                    continue
                basic = action.get_nested("TCA_ACT_STATS", "TCA_STATS_BASIC") or {}
                queue = action.get_nested("TCA_ACT_STATS", "TCA_STATS_QUEUE") or {}
                counters = MirrorCounters(
                    packets=int(basic.get("packets", 0)),
                    bytes=int(basic.get("bytes", 0)),
                    overlimits=int(queue.get("overlimits", 0)),
                    drops=int(queue.get("drops", 0)),
                )
                found.append(_Mirror(host_idx, direction, int(msg["handle"]), int(parms["ifindex"]), counters))
    return found


@dataclass(frozen=True, slots=True)
class _Budget:
    """A copy budget in front of one direction's mirror: a tcx program (`handle` None) or a cls_bpf filter."""

    host_ifindex: int
    direction: Direction
    handle: int | None
    budget: CopyBudget
    prog_id: int

    @property
    def on_tcx(self) -> bool:
        return self.handle is None


def _budgets_on(ipr: Any, host_idx: int) -> list[_Budget]:
    """Our copy budgets on one interface: programs named as ours on its tcx hooks, and bpf filters at our budget
    priority whose name records a budget (where tcx is missing, or as an older vmshadow left them)."""
    found = _budget_filters_on(ipr, host_idx)
    if copy_budget.tcx_available():
        for direction, hook in _TCX_HOOK.items():
            for prog_id in copy_budget.tcx_programs(host_idx, hook):
                try:
                    state = copy_budget.read(prog_id)
                except BackendUnavailableError:
                    continue  # detached and unloaded since the query
                if state is not None and state.budget is not None:
                    found.append(_Budget(host_idx, direction, None, state.budget, prog_id))
    return found


def _budget_filters_on(ipr: Any, host_idx: int) -> list[_Budget]:
    found = []
    for direction, prio in _BUDGET_PRIO.items():
        parent = _HOOKS[direction][0]
        for msg in _filters(ipr, host_idx, parent):
            options = msg.get_attr("TCA_OPTIONS")
            if msg["info"] >> 16 != prio or msg.get_attr("TCA_KIND") != "bpf" or options is None:
                continue
            budget = CopyBudget.from_filter_name(options.get_attr("TCA_BPF_NAME"))
            prog_id = _bpf_prog_id(options)
            if budget is not None and prog_id is not None:
                found.append(_Budget(host_idx, direction, int(msg["handle"]), budget, prog_id))
    return found


def _bpf_prog_id(options: Any) -> int | None:
    for name, value in options["attrs"]:
        if name == "UNKNOWN" and value["header"]["type"] == _TCA_BPF_ID and value["header"]["length"] >= 8:
            return int(struct.unpack_from("<I", value.data, value.offset + 4)[0])
    return None


def _put_budget(ipr: Any, host_idx: int, wanted: tuple[Direction, ...], budget: CopyBudget, on_tcx: bool) -> None:
    """Make `budget` guard the mirrors of `wanted` with one program (one bucket per VMN), on tcx when `on_tcx`;
    swap, never gap. Budgets on the other kind of hook are left for the caller to remove once this one is in."""
    present = {f.direction: f for f in _budgets_on(ipr, host_idx) if f.on_tcx == on_tcx}
    programs = {f.prog_id for f in present.values()}
    if present and len(programs) == 1 and all(f.budget == budget for f in present.values()):
        # the VMN's program is right: guard a newly wanted direction with it too (one bucket, counters kept)
        missing = [d for d in wanted if d not in present]
        if missing:
            fd = copy_budget.program_fd(programs.pop())
            try:
                for direction in missing:
                    _add_budget(ipr, host_idx, direction, fd, budget, None, on_tcx)
            finally:
                os.close(fd)
        return
    loaded = copy_budget.load(budget)
    try:
        for direction in wanted:
            _add_budget(ipr, host_idx, direction, loaded.prog_fd, budget, present.get(direction), on_tcx)
    finally:
        loaded.close()  # the hooks hold the program, the program holds its map


def _add_budget(
    ipr: Any,
    host_idx: int,
    direction: Direction,
    prog_fd: int,
    budget: CopyBudget,
    existing: _Budget | None,
    on_tcx: bool,
) -> None:
    """Put the budget program on `direction`'s hook in place of `existing` (atomically) or beside the mirror."""
    if on_tcx:
        replacing = existing.prog_id if existing is not None else None
        copy_budget.tcx_attach(host_idx, _TCX_HOOK[direction], prog_fd, replacing=replacing)
    else:
        _add_budget_filter(ipr, host_idx, direction, prog_fd, budget, existing.handle if existing else None)


def _add_budget_filter(
    ipr: Any, host_idx: int, direction: Direction, prog_fd: int, budget: CopyBudget, handle: int | None
) -> None:
    """Put the budget filter on `direction`'s hook; with the `handle` of an existing one, replace it in place."""
    # replacing the filter's handle swaps the program atomically: the mirror is never unguarded
    _netlink(
        f"put the {direction} copy budget",
        ipr.tc,
        "replace-filter" if handle is not None else "add-filter",
        "bpf",
        host_idx,
        handle=handle,
        parent=_HOOKS[direction][0],
        prio=_BUDGET_PRIO[direction],
        protocol=ETH_P_ALL,
        fd=prog_fd,
        name=budget.filter_name,
        direct_action=True,
    )


def _delete_budget(ipr: Any, found: _Budget) -> None:
    if found.handle is None:
        copy_budget.tcx_detach(found.host_ifindex, _TCX_HOOK[found.direction], found.prog_id)
        return
    parent = _HOOKS[found.direction][0]
    info = (_BUDGET_PRIO[found.direction] << 16) | _htons(ETH_P_ALL)
    try:
        ipr.tc("del-filter", index=found.host_ifindex, parent=parent, handle=found.handle, info=info)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            raise kernel_error(f"remove the {found.direction} copy budget", exc) from exc


def _htons(value: int) -> int:
    return ((value & 0xFF) << 8) | ((value >> 8) & 0xFF)


# --- the alias: what a fresh process needs to know ----------------------------------------------------------


def _alias(vmn: str, host_interface: str, snaplen: int | None) -> str:
    return f"{ALIAS_TAG} vmn={vmn} host={host_interface} snaplen={snaplen if snaplen is not None else '-'}"


def _parse_alias(alias: str | None) -> dict[str, str]:
    if not alias or not alias.startswith(ALIAS_TAG + " "):
        return {}
    fields = {}
    for part in alias.split()[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    return fields


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    return int(text)


def _check_attach_input(vmn: str, host_interface: str, snaplen: int | None) -> None:
    issues = []
    if not _NAME.match(vmn):
        issues.append(
            Issue("capture", f"{vmn!r} is not a VMN name (a letter, then letters, digits, '_', '.', '-')", field="vmn")
        )
    if not _IFNAME.match(host_interface):
        issues.append(Issue("capture", f"{host_interface!r} is not an interface name", field="host"))
    if snaplen is not None and not 64 <= snaplen <= 262144:
        issues.append(Issue("capture", f"snaplen {snaplen} is outside 64..262144", field="snaplen"))
    if issues:
        raise InputError(issues)
