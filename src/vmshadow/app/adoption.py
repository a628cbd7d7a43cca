"""VMNs that come up while `vmshadow run` watches a bridge are adopted, not ignored until a restart.

A VM started after the service (a new tap on `virbr0`, or `vmshadow lab up --vmns 3` after a run on two) gets, at
the next turn of the `capture.adopt` duty:

1. its shadow port (tc mirror before any TMR, under the run's copy budget);
2. a meter on it (`LiveSource.add_port`), so its traffic reaches the SAE;
3. a place in the TMRSet the recommenders reason about (`EmbeddedService.tmrset`), so proposals can name it;
4. a place in the TMRSet in force, when one is: the same TMRs put in force again as a new version knowing the VMN
   (its bridge port, MACs and addresses), so a proposal naming it can be applied. No TMR changes; when no TMRSet is
   in force the kernel is left alone (nothing asked for enforcement).

A VMN whose host-side interface was made again (a VM restarted: libvirt deletes its tap and makes a new one, often
with the same name) has lost its mirror with the old interface; at the next turn the mirror is attached to the new
interface. Its shadow port is named from the VMN, so it is the same port and its meter reads on.

A VMN that is gone (no longer on the bridge, or its host-side interface missing) for `GONE_AFTER_S` is retired: its
meter stops (at its next flow: within ~2.5 s), then at a later turn the port is forgotten (no health, no
heartbeats) and its shadow port removed. The grace keeps a restarting VM (back within a minute) on its meter. A
VMN that comes back after that is adopted afresh.

`FollowInForce` (duty `tm.follow`) keeps the service's TMRSet the one in force: an administrator applies and rolls
back proposals from other processes (CLI, API), and the recommenders must reason about what is enforced now.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from vmshadow.app.tm import ApplyResult, TMSettings, open_enforcer
from vmshadow.capture import shadow_port
from vmshadow.capture.shadow_port import ShadowPort
from vmshadow.domain.tmr import TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.flows.live import LiveSource, MeteredPort

ADOPT_EVERY_S = 10.0
GONE_AFTER_S = 60.0  # a VMN missing this long is retired; a restarting VM is back well within it


def interface_index(name: str) -> int | None:
    """The ifindex of an interface of this namespace now; None when there is none by that name."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def knowing(tmrset: TMRSet, vmns: Sequence[VMN]) -> TMRSet:
    """`tmrset` with the VMNs it does not define yet (a VMN it defines keeps its definition)."""
    known = {v.name for v in tmrset.vmns}
    new = tuple(v for v in vmns if v.name not in known)
    return replace(tmrset, vmns=tmrset.vmns + new) if new else tmrset


def on_interfaces(tmrset: TMRSet, vmns: Sequence[VMN]) -> TMRSet:
    """`tmrset` with each of `vmns` it defines moved to the host-side interfaces the VMN has now (the rest of its
    definition kept): the TM manages bridge ports by name, and a port it does not know is outside its rules."""
    now = {v.name: v.interfaces for v in vmns if v.interfaces}
    moved = tuple(
        replace(v, interfaces=now[v.name]) if v.name in now and now[v.name] != v.interfaces else v for v in tmrset.vmns
    )
    return replace(tmrset, vmns=moved) if moved != tmrset.vmns else tmrset


def teach_in_force(
    settings: TMSettings, vmns: Sequence[VMN], at: datetime | None = None, *, moved: Sequence[VMN] = ()
) -> ApplyResult | None:
    """Put the TMRSet in force again knowing `vmns`, and with the VMNs `moved` on their interfaces now, as a new
    version; None when no TMRSet is in force or it has all that already."""
    with open_enforcer(settings) as enforcer:
        current = enforcer.current()
        if current is None:
            return None
        wider = on_interfaces(knowing(current.tmrset, vmns), moved)
        if wider is current.tmrset:
            return None
        before = {v.name: v for v in current.tmrset.vmns}
        came_up = ", ".join(sorted(v.name for v in wider.vmns if v.name not in before))
        on_new = ", ".join(sorted(v.name for v in wider.vmns if before.get(v.name, v) != v))
        parts = (f"VMNs came up: {came_up}" if came_up else "", f"VMNs on new interfaces: {on_new}" if on_new else "")
        comment = "; ".join(p for p in parts if p)
        applied = enforcer.apply(wider, at or datetime.now(UTC), comment=comment)
        assert enforcer.last_report is not None
        return ApplyResult(applied.version, applied.applied_at, enforcer.last_report)


@dataclass
class Adoption:
    """The `capture.adopt` duty (see the module doc). `on_bridge` lists the VMNs on the bridge now and whether
    their shadow ports copy both directions, `attach` gives VMNs their shadow ports; `ports` (VMN name -> shadow
    port) is shared with the service's health."""

    on_bridge: Callable[[], tuple[list[VMN], bool]]
    attach: Callable[[list[VMN], bool], list[tuple[VMN, ShadowPort]]]
    source: LiveSource
    ports: MutableMapping[str, ShadowPort]
    tmrset: Callable[[], TMRSet]
    set_tmrset: Callable[[TMRSet], None]
    tm: TMSettings | None  # None: no TM to teach (tests without a bridge table)
    detach: Callable[[ShadowPort], object] = shadow_port.detach  # removes a retired VMN's shadow port
    ifindex: Callable[[str], int | None] = interface_index
    gone_after_s: float = GONE_AFTER_S
    clock: Callable[[], float] = time.monotonic
    missing_since: dict[str, float] = field(default_factory=dict)  # VMN -> when it was first seen gone
    retiring: dict[str, ShadowPort] = field(default_factory=dict)  # VMNs whose meter was asked to stop
    retired: deque[str] = field(default_factory=lambda: deque(maxlen=1000))  # the latest retired (port removed)

    def __call__(self) -> list[str]:
        """The VMNs re-attached or adopted at this turn (the retired ones are in `retired`)."""
        listed, both = self.on_bridge()
        # a VMN listed without its interface (a lab VMN whose VM is down) has nothing to attach to
        on_bridge = [v for v in listed if v.interfaces and self.ifindex(v.interfaces[0]) is not None]
        self._retire_gone({v.name for v in on_bridge})
        remade, renamed = self._reattach(on_bridge, both)
        adopted = self._adopt([v for v in on_bridge if v.name not in self.ports and v.name not in self.retiring], both)
        if self.tm is not None and (adopted or renamed):
            teach_in_force(self.tm, adopted, moved=renamed)
        return [v.name for v in remade + adopted]

    def _retire_gone(self, present: set[str]) -> None:
        now = self.clock()
        for name in [n for n in self.ports if n not in present]:
            since = self.missing_since.setdefault(name, now)
            if now - since >= self.gone_after_s:
                del self.missing_since[name]
                port = self.ports.pop(name)  # the service's health stops reading its mirror counters
                self.source.retire_port(port.reader_interface)
                self.retiring[name] = port
        for name in present:
            self.missing_since.pop(name, None)
        for name, port in list(self.retiring.items()):
            if self.source.forget_port(port.reader_interface):  # its meter has stopped
                self.detach(port)
                del self.retiring[name]
                self.retired.append(name)

    def _reattach(self, on_bridge: list[VMN], both: bool) -> tuple[list[VMN], list[VMN]]:
        """Mirrors back on remade interfaces: (the VMNs re-attached, those of them on an interface of a new name)."""
        remade = [v for v in on_bridge if v.name in self.ports and self._remade(v, self.ports[v.name])]
        if not remade:
            return [], []
        renamed = [v for v in remade if v.interfaces[0] != self.ports[v.name].host_interface]
        for vmn, port in self.attach(remade, both):
            self.ports[vmn.name] = port  # the same shadow port, fed again: its meter reads on
        if renamed:  # the TM manages bridge ports by name: a port it does not know is outside its rules
            self.set_tmrset(on_interfaces(self.tmrset(), renamed))
        return remade, renamed

    def _adopt(self, new: list[VMN], both: bool) -> list[VMN]:
        if not new:
            return []
        attached = self.attach(new, both)
        self.set_tmrset(knowing(self.tmrset(), [vmn for vmn, _ in attached]))
        vmn_map = self.tmrset().vmn_map
        for vmn, port in attached:
            self.ports[vmn.name] = port
            self.source.add_port(MeteredPort(vmn.name, port.reader_interface, port.shadow_interface), vmn_map)
        return [vmn for vmn, _ in attached]

    def _remade(self, vmn: VMN, port: ShadowPort) -> bool:
        """Whether the VMN's host-side interface (present) is another one than the one its mirror was attached to."""
        return vmn.interfaces[0] != port.host_interface or self.ifindex(vmn.interfaces[0]) != port.host_ifindex


FOLLOW_EVERY_S = 5.0


@dataclass
class FollowInForce:
    """The `tm.follow` duty: when the version in force changes, the service reasons about it (knowing every
    watched VMN). Returns the version it now follows."""

    tm: TMSettings
    set_tmrset: Callable[[TMRSet], None]
    watched: Callable[[], Sequence[VMN]]
    version: int | None = None

    def __call__(self) -> int | None:
        with open_enforcer(self.tm) as enforcer:
            if enforcer.current_version() in (None, self.version):  # cheap: the table's comment, no elements
                return self.version
            current = enforcer.current()
        if current is not None:
            self.set_tmrset(knowing(current.tmrset, self.watched()))
            self.version = current.version
        return self.version
