"""The lab in the kernel: VMNs as network namespaces on a Linux bridge in the root namespace, like a hypervisor.

`Lab.up` builds what `vmshadow.lab.state.plan_lab` plans, completing a partial lab and removing hosts a smaller
plan no longer has; `Lab.down` removes what the state file lists, or, when the file is lost, every namespace and
link whose name fits the lab's naming (`lab_name_pattern`), and nothing else. Both are idempotent.

The host side has no address at all, not even an IPv6 link-local one, and does not forward: the bridge gets
``net.ipv4.conf.<bridge>.forwarding=0``, ``rp_filter=1`` (lab sources have no route back through it) and
``arp_ignore=8``, and ``disable_ipv6=1`` on every lab link in the root namespace. Inside, each namespace has only
its /24 link route: an address outside the lab has no route, so nothing is sent.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from vmshadow.capture import shadow_port
from vmshadow.capture.budget import CopyBudget
from vmshadow.capture.netlink import find_link, ifname, kernel_error, link_kind
from vmshadow.capture.shadow_port import DEFAULT_BUDGET
from vmshadow.domain.errors import BackendUnavailableError, InputError, Issue
from vmshadow.lab.state import (
    DEFAULT_BRIDGE,
    DEFAULT_STATE_DIR,
    GUEST_INTERFACE,
    HOST_LINK_PREFIX,
    NAMESPACE_PREFIX,
    HostRole,
    LabHost,
    LabState,
    lab_name_pattern,
    plan_lab,
    read_state,
    state_file,
    write_state,
)

_ADDR_GEN_MODE_NONE = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}
_BRIDGE_SYSCTLS = (("ipv4", "forwarding", "0"), ("ipv4", "rp_filter", "1"), ("ipv4", "arp_ignore", "8"))
_TERM_WAIT_S = 2.0
_EXIT_TIMEOUT = 124  # what timeout(1) returns


@dataclass(frozen=True, slots=True)
class LabTeardown:
    """What `Lab.down` removed, and what it kept (a bridge with foreign ports)."""

    namespaces: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    signalled_pids: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "removed": {"namespaces": list(self.namespaces), "links": list(self.links)},
            "kept": list(self.kept),
            "signalled_pids": list(self.signalled_pids),
        }


@dataclass(frozen=True, slots=True)
class LabStatus:
    """The recorded lab (if any) checked against the kernel, plus lab-named objects the record does not list."""

    state_file: Path
    state: LabState | None
    bridge_present: bool = False
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)
    leftovers: tuple[str, ...] = ()

    @property
    def up(self) -> bool:
        return self.state is not None and self.bridge_present and not any(self.missing.values())

    def to_json(self) -> dict[str, Any]:
        hosts = []
        if self.state is not None:
            for h in self.state.hosts:
                item = h.to_json()
                item["missing"] = list(self.missing.get(h.name, ()))
                hosts.append(item)
        return {
            "up": self.up,
            "state_file": str(self.state_file),
            "tag": self.state.tag if self.state else None,
            "bridge": self.state.bridge if self.state else None,
            "bridge_present": self.bridge_present,
            "both_directions": self.state.both_directions if self.state else None,
            "snaplen": self.state.snaplen if self.state else None,
            "hosts": hosts,
            "leftovers": list(self.leftovers),
        }


class Lab:
    """One lab, identified by its tag ("" for the default lab); its record lives in `state_dir`."""

    def __init__(self, tag: str = "", *, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        plan_lab(1, tag=tag)  # validates the tag
        self.tag = tag
        self.state_file = state_file(state_dir, tag)
        self._names = lab_name_pattern(tag)

    def state(self) -> LabState | None:
        return read_state(self.state_file)

    def up(
        self,
        n_vmns: int = 2,
        bridge: str = DEFAULT_BRIDGE,
        *,
        both_directions: bool = False,
        snaplen: int | None = None,
        copy_budget: CopyBudget | None = DEFAULT_BUDGET,
    ) -> LabState:
        """Build the lab (or complete it); returns what is now up. Idempotent. `copy_budget` is each shadow port's
        kernel-side copy budget (`None`: every packet copied)."""
        plan = plan_lab(n_vmns, bridge, tag=self.tag, both_directions=both_directions, snaplen=snaplen)
        _require_root()
        recorded = self.state()
        if recorded is not None and recorded.bridge != bridge:
            raise InputError(
                Issue(
                    "lab",
                    f"the lab is up on bridge {recorded.bridge}; run `vmshadow lab down` before using {bridge}",
                    field="bridge",
                )
            )
        planned = {h.name for h in plan.hosts}
        extra = tuple(h for h in recorded.hosts if h.name not in planned) if recorded else ()
        with _ipr() as ipr:
            _check_not_taken(ipr, plan)
            # record first: a crash part-way leaves a file that names everything `down` must remove
            write_state(self.state_file, LabState(plan.tag, bridge, plan.hosts + extra, both_directions, snaplen))
            for host in extra:
                _remove_host(ipr, host)
            bridge_idx = _ensure_bridge(ipr, bridge)
            for host in plan.hosts:
                _ensure_host(ipr, host, bridge_idx)
        for host in plan.vmns:
            shadow_port.attach(
                host.name, host.host_interface, both_directions=both_directions, snaplen=snaplen, budget=copy_budget
            )
        write_state(self.state_file, plan)
        return plan

    def down(self, bridge: str | None = None) -> LabTeardown:
        """Remove the lab: what the state file lists, or (file lost) what fits the lab's names. Idempotent.

        Without the file, a host whose host-side interface is a port of a bridge other than `bridge` (default
        vmsbr0 for the untagged lab) belongs to another lab and is kept.

        Processes still running in the lab's namespaces get SIGTERM, then SIGKILL after 2 s.
        """
        _require_root()
        recorded = self.state()
        with _ipr() as ipr:
            links = {link.get_attr("IFLA_IFNAME"): link for link in ipr.get_links()}
            kept: list[str] = []
            if recorded is not None:
                hosts = [h.name for h in recorded.hosts]
                bridge = recorded.bridge
            else:
                if bridge is None and not self.tag:
                    bridge = DEFAULT_BRIDGE
                hosts = []
                for name in sorted(self._lab_names(links)):
                    owner = _master_name(ipr, links.get(HOST_LINK_PREFIX + name))
                    if owner is not None and owner != bridge:  # a port of another bridge: another lab's
                        kept.append(f"{name} (a port of {owner}, not {bridge})")
                    else:
                        hosts.append(name)
            removed_links: list[str] = []
            removed_ns: list[str] = []
            pids: list[int] = []
            for name in hosts:
                shadow = shadow_port.shadow_interface_name(name)
                if shadow in links and shadow_port.detach(shadow):
                    removed_links.append(shadow)
                host_link = HOST_LINK_PREFIX + name
                if host_link in links and _delete_link(ipr, host_link):
                    removed_links.append(host_link)
                namespace = NAMESPACE_PREFIX + name
                if namespace in netns.listnetns():
                    pids.extend(_stop_processes(namespace))
                    with suppress(FileNotFoundError):
                        netns.remove(namespace)
                    removed_ns.append(namespace)
            if bridge is not None and bridge in links:
                ports = _bridge_ports(ipr, bridge)
                if ports:
                    kept.append(f"{bridge} (ports left: {', '.join(ports)})")
                elif _delete_link(ipr, bridge):
                    removed_links.append(bridge)
        self.state_file.unlink(missing_ok=True)
        return LabTeardown(tuple(removed_ns), tuple(removed_links), tuple(kept), tuple(pids))

    def status(self) -> LabStatus:
        """The record checked against the kernel: missing pieces per host, and lab-named leftovers."""
        recorded = self.state()
        with IPRoute() as ipr:
            links = {link.get_attr("IFLA_IFNAME"): link for link in ipr.get_links()}
        namespaces = set(netns.listnetns())
        lab_names = self._lab_names(links)
        if recorded is None:
            found = [x for n in sorted(lab_names) for x in _objects_of(n, links, namespaces)]
            return LabStatus(self.state_file, None, leftovers=tuple(found))
        missing = {}
        for host in recorded.hosts:
            want = [host.namespace, host.host_interface]
            if host.shadow_interface:
                want.append(host.shadow_interface)
            missing[host.name] = tuple(x for x in want if x not in links and x not in namespaces)
        recorded_names = {h.name for h in recorded.hosts}
        leftovers = [x for n in sorted(lab_names - recorded_names) for x in _objects_of(n, links, namespaces)]
        return LabStatus(self.state_file, recorded, recorded.bridge in links, missing, tuple(leftovers))

    def exec(self, host: str, argv: Sequence[str], *, timeout_s: float | None = None) -> int:
        """Run `argv` in a lab host's namespace (stdin/stdout/stderr inherited); its exit code.

        124 when `timeout_s` passed first (the command is killed), 127 when it cannot be started.
        """
        recorded = self.state()
        if recorded is None:
            raise InputError(Issue("lab", "no lab is up (run `vmshadow lab up`)"))
        if not argv:
            raise InputError(Issue("lab", "no command to run", field="command"))
        target = recorded.host(host)
        try:
            return subprocess.run(
                ["ip", "netns", "exec", target.namespace, *argv], timeout=timeout_s, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            return _EXIT_TIMEOUT
        except FileNotFoundError as exc:
            raise BackendUnavailableError("`ip` (iproute2) is not installed") from exc

    def _lab_names(self, links: dict[str, Any]) -> set[str]:
        """Host names that have a namespace, host link or shadow port named like this lab's."""
        found = set()
        for ns in netns.listnetns():
            if ns.startswith(NAMESPACE_PREFIX) and self._names.match(ns[len(NAMESPACE_PREFIX) :]):
                found.add(ns[len(NAMESPACE_PREFIX) :])
        for name in links:
            for prefix in (HOST_LINK_PREFIX, shadow_port.SHADOW_PREFIX):
                if name.startswith(prefix) and self._names.match(name[len(prefix) :]):
                    found.add(name[len(prefix) :])
        return found


def lab_exec(
    host: str,
    argv: Sequence[str],
    *,
    tag: str = "",
    state_dir: Path = DEFAULT_STATE_DIR,
    timeout_s: float | None = None,
) -> int:
    """`Lab.exec` for the lab with `tag`."""
    return Lab(tag, state_dir=state_dir).exec(host, argv, timeout_s=timeout_s)


# --- kernel access -------------------------------------------------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        raise BackendUnavailableError("the lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for namespaces)")


@contextmanager
def _ipr() -> Iterator[Any]:
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _master_name(ipr: Any, link: Any | None) -> str | None:
    master = link.get_attr("IFLA_MASTER") if link is not None else None
    return ifname(ipr, master) if master is not None else None


def _delete_link(ipr: Any, name: str) -> bool:
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise kernel_error(f"delete {name}", exc) from exc
    return True


def _sysctl(family: str, ifname: str, key: str, value: str) -> None:
    path = Path("/proc/sys/net") / family / "conf" / ifname / key
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
    except OSError as exc:
        raise BackendUnavailableError(f"cannot set {path} to {value}: {exc}") from exc


def _quiet(ipr: Any, index: int, ifname: str) -> None:
    """No IPv6 on a root-namespace lab link: no link-local address, nothing sent by the host itself."""
    try:
        ipr.link("set", index=index, af_spec=_ADDR_GEN_MODE_NONE)
    except NetlinkError as exc:
        raise kernel_error(f"turn off IPv6 address generation on {ifname}", exc) from exc
    _sysctl("ipv6", ifname, "disable_ipv6", "1")


def _check_not_taken(ipr: Any, plan: LabState) -> None:
    """Refuse, before anything is recorded or changed, to adopt the ports of another bridge (another lab)."""
    issues = []
    for host in plan.hosts:
        link = find_link(ipr, host.host_interface)
        master = link.get_attr("IFLA_MASTER") if link is not None else None
        if master is not None and ifname(ipr, master) != plan.bridge:
            issues.append(
                Issue(
                    "lab",
                    f"{host.host_interface} is a port of another bridge ({ifname(ipr, master)}): another lab with "
                    "these names is up; use another tag, or take that lab down",
                    field="bridge",
                )
            )
    if issues:
        raise InputError(issues)


def _ensure_bridge(ipr: Any, name: str) -> int:
    link = find_link(ipr, name)
    if link is None:
        try:
            ipr.link("add", ifname=name, kind="bridge")
        except NetlinkError as exc:
            raise kernel_error(f"create bridge {name}", exc) from exc
        link = find_link(ipr, name)
        assert link is not None
    elif link_kind(link) != "bridge":
        raise InputError(Issue("lab", f"{name} exists and is not a bridge ({link_kind(link)})", field="bridge"))
    index: int = link["index"]
    addresses = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)]
    if addresses:
        raise InputError(
            Issue("lab", f"bridge {name} has addresses ({', '.join(addresses)}); a lab bridge has none", field="bridge")
        )
    _quiet(ipr, index, name)
    for family, key, value in _BRIDGE_SYSCTLS:
        _sysctl(family, name, key, value)
    try:
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise kernel_error(f"bring {name} up", exc) from exc
    return index


def _ensure_host(ipr: Any, host: LabHost, bridge_idx: int) -> None:
    if host.namespace not in netns.listnetns():
        try:
            netns.create(host.namespace)
        except OSError as exc:
            raise BackendUnavailableError(f"cannot create namespace {host.namespace}: {exc}") from exc
    link = find_link(ipr, host.host_interface)
    with IPRoute(netns=host.namespace, flags=0) as inside:
        guest = inside.link_lookup(ifname=host.guest_interface)
        if link is not None and (not guest or link_kind(link) != "veth"):
            _delete_link(ipr, host.host_interface)  # half a pair: start again
            link = None
        if link is None:
            for index in guest:  # an orphan guest interface would block the new pair's name
                inside.link("del", index=index)
            try:
                ipr.link(
                    "add",
                    ifname=host.host_interface,
                    kind="veth",
                    peer={"ifname": host.guest_interface, "net_ns_fd": host.namespace, "address": host.mac},
                )
            except NetlinkError as exc:
                raise kernel_error(f"create veth {host.host_interface}", exc) from exc
            link = find_link(ipr, host.host_interface)
            assert link is not None
        _configure_guest(inside, host)
    index = link["index"]
    _quiet(ipr, index, host.host_interface)
    try:
        ipr.link("set", index=index, master=bridge_idx, state="up")
    except NetlinkError as exc:
        raise kernel_error(f"enslave {host.host_interface}", exc) from exc


def _configure_guest(inside: Any, host: LabHost) -> None:
    (index,) = inside.link_lookup(ifname=host.guest_interface)
    try:
        inside.link("set", index=index, af_spec=_ADDR_GEN_MODE_NONE)  # IPv4 only: a quiet, predictable lab
        inside.link("set", index=index, address=host.mac)
        try:
            inside.addr("add", index=index, address=str(host.address.ip), prefixlen=host.address.network.prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        inside.link("set", index=index, state="up")
        (lo,) = inside.link_lookup(ifname="lo")
        inside.link("set", index=lo, state="up")
    except NetlinkError as exc:
        raise kernel_error(f"configure {host.guest_interface} in {host.namespace}", exc) from exc


def _remove_host(ipr: Any, host: LabHost) -> None:
    if host.role is HostRole.VMN and host.shadow_interface:
        shadow_port.detach(host.shadow_interface)
    _delete_link(ipr, host.host_interface)
    if host.namespace in netns.listnetns():
        _stop_processes(host.namespace)
        with suppress(FileNotFoundError):
            netns.remove(host.namespace)


def _bridge_ports(ipr: Any, bridge: str) -> list[str]:
    link = find_link(ipr, bridge)
    if link is None:
        return []
    return sorted(
        str(port.get_attr("IFLA_IFNAME")) for port in ipr.get_links() if port.get_attr("IFLA_MASTER") == link["index"]
    )


def _stop_processes(namespace: str) -> list[int]:
    """SIGTERM every process in the namespace, SIGKILL what is left after a bounded wait; the pids signalled."""
    pids = list(netns.ns_pids().get(namespace, []))
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _TERM_WAIT_S
    alive = pids
    for _ in range(100):  # bounded in count and time
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for pid in alive:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _objects_of(name: str, links: dict[str, Any], namespaces: set[str]) -> list[str]:
    candidates = [NAMESPACE_PREFIX + name, HOST_LINK_PREFIX + name, shadow_port.shadow_interface_name(name)]
    return [x for x in candidates if x in links or x in namespaces]


__all__ = ["GUEST_INTERFACE", "Lab", "LabStatus", "LabTeardown", "lab_exec"]
