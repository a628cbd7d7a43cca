"""A throw-away tagged lab for live tests: unique names, torn down even when a test fails."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute, netns

from vmshadow.flows.live import MeteredPort
from vmshadow.lab.probe import open_socket, ping
from vmshadow.lab.state import LabHost, LabState
from vmshadow.lab.topology import Lab


def unique_names(letter: str = "l") -> tuple[str, str]:
    """A lab tag and bridge name no other test (or a user's lab) uses: `<letter><3 hex>`, `vms<LETTER><4 hex>`."""
    suffix = secrets.token_hex(2)
    return f"{letter}{suffix[:3]}", f"vms{letter.upper()}{suffix}"


def lab_objects(tag: str, bridge: str) -> list[str]:
    """Every namespace and link of the lab tagged `tag` (by name), and the bridge."""
    prefixes = (f"vmsv-{tag}-", f"vmss-{tag}-", f"vmsr-{tag}-")
    with IPRoute() as ipr:
        links = [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]
    found = [n for n in netns.listnetns() if n.startswith(f"vms-{tag}-")]
    return sorted(found + [n for n in links if n.startswith(prefixes) or n == bridge])


def sweep(tag: str, bridge: str) -> None:
    """Last resort after `Lab.down`: remove whatever is left by name."""
    for name in lab_objects(tag, bridge):
        if name.startswith("vms-"):
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)
        else:
            subprocess.run(["ip", "link", "delete", name], check=False, timeout=10)


@contextmanager
def tagged_lab(state_dir: Path, n_vmns: int = 2, *, letter: str = "l") -> Iterator[LabState]:
    """A lab with unique names, up with ARP already resolved between vm1 and vm2; removed whatever happens."""
    tag, bridge = unique_names(letter)
    lab = Lab(tag, state_dir=state_dir)
    try:
        state = lab.up(n_vmns, bridge)
        vm1, vm2 = state.vmns[:2]
        assert ping(vm1.namespace, str(vm2.address.ip))  # ARP resolved before any counting
        yield state
    finally:
        try:
            lab.down(bridge)
        finally:
            sweep(tag, bridge)


def send_udp(namespace: str, address: str, ports: range, *, payload: bytes = b"vmshadow-test", repeat: int = 1) -> None:
    """`repeat` datagrams to each port, from one socket inside `namespace`."""
    with open_socket(namespace, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for port in ports:
            for _ in range(repeat):
                sock.sendto(payload, (address, port))


@contextmanager
def udp_listener(namespace: str, port: int) -> Iterator[socket.socket]:
    sock = open_socket(namespace, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0", port))
        yield sock
    finally:
        sock.close()


def drain(sock: socket.socket, *, expect: int, timeout_s: float) -> int:
    """Datagrams received until `expect` arrived or `timeout_s` passed."""
    got, deadline = 0, time.monotonic() + timeout_s
    while got < expect:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            sock.recv(2048)
        except TimeoutError:
            break
        got += 1
    return got


def wait_until(condition: Callable[[], bool], *, timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


T = TypeVar("T")


def wait_for(
    probe: Callable[[], T], *, timeout_s: float, what: str = "condition", detail: Callable[[], str] = lambda: ""
) -> T:
    """The first truthy value `probe` gives within `timeout_s`; fails the test (saying `what`, and `detail()`)
    otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s {detail()}".rstrip())
        time.sleep(0.05)


def metered(host: LabHost) -> MeteredPort:
    """The lab host's shadow port as the meter sees it (copies on its reader end)."""
    assert host.shadow_interface is not None
    return MeteredPort(host.name, "vmsr-" + host.shadow_interface.removeprefix("vmss-"), host.shadow_interface)
