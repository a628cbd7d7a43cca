"""A minimal DNS client (one A query over UDP from inside a namespace), so benign lookups need no resolver
configuration in the namespace and no extra tool."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct

from vmshadow.lab.scenarios.netns_socket import ns_socket

_QTYPE_A = 1
_QCLASS_IN = 1


def query(name: str, ident: int) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # recursion desired, one question
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split("."))
    return header + labels + b"\0" + struct.pack("!HH", _QTYPE_A, _QCLASS_IN)


def first_a_record(answer: bytes, ident: int) -> str | None:
    """The first A record of an answer to query `ident`, or None (another id, an error, no A record)."""
    if len(answer) < 12:
        return None
    got, flags, qd, an = struct.unpack("!HHHH", answer[:8])
    if got != ident or flags & 0x000F or an == 0:
        return None
    pos = 12
    for _ in range(qd):  # skip the question: name, type, class
        while answer[pos] != 0:
            pos += answer[pos] + 1
        pos += 5
    for _ in range(an):
        pos += 2 if answer[pos] & 0xC0 == 0xC0 else answer.index(b"\0", pos) - pos + 1
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", answer[pos : pos + 10])
        pos += 10
        if rtype == _QTYPE_A and length == 4:
            return str(ipaddress.IPv4Address(answer[pos : pos + 4]))
        pos += length
    return None


def lookup(namespace: str, server: str, name: str, *, timeout_s: float = 1.0) -> str | None:
    """The A record for `name` from `server` (port 53), asked from `namespace`; None when none came in time."""
    ident = secrets.randbelow(0x10000)
    with ns_socket(namespace, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(query(name, ident), (server, 53))
            data = sock.recv(1500)
        except OSError:
            return None
    return first_a_record(data, ident)
