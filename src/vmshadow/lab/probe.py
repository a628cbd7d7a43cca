"""Talking from inside a lab namespace without any binary: sockets, an ICMP echo, a route check.

The machines this is tested on have no ``ping``; a raw ICMP socket opened inside the namespace does the same, one
echo request and one bounded wait, like ``ping -c 1 -W 1``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from vmshadow.domain.errors import InputError, Issue

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
_MAX_READS = 1000  # other ICMP in the namespace (e.g. a concurrent test's pings) is skipped, within a bound


def open_socket(namespace: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket living in `namespace` (created there by a short-lived child; the namespace must exist)."""
    if namespace not in netns.listnetns():
        raise InputError(Issue("lab", f"no network namespace {namespace!r}", field="namespace"))
    return netns.create_socket(namespace, family, kind, proto, flags=0)  # type: ignore[no-any-return]


def ping(namespace: str, address: str, *, timeout_s: float = 1.0) -> bool:
    """True when `address` answers one ICMP echo sent from `namespace` within `timeout_s`."""
    ident = (os.getpid() ^ time.monotonic_ns()) & 0xFFFF
    payload = b"vmshadow-lab-probe"
    with open_socket(namespace, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 1)
        packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + payload), ident, 1) + payload
        try:
            sock.sendto(packet, (address, 0))
        except OSError:  # no route, unreachable: nothing was sent
            return False
        deadline = time.monotonic() + timeout_s
        for _ in range(_MAX_READS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sock.settimeout(remaining)
            try:
                data, (source, _) = sock.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8 or source != address:
                continue
            kind, _code, _sum, got_ident, seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind == ICMP_ECHO_REPLY and got_ident == ident and seq == 1:
                return True
    return False


def has_route(namespace: str, address: str) -> bool:
    """Whether `namespace` has any route to `address` (the lab has only its /24, so most addresses have none)."""
    with IPRoute(netns=namespace, flags=0) as ipr:
        try:
            ipr.route("get", dst=address)
        except NetlinkError as exc:
            if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return False
            raise
    return True


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
