"""Community ID v1 (https://github.com/corelight/community-id-spec), computed inline.

The `communityid` package is the reference (tests compare against it), but it costs ~77 µs per flow here,
most of it in argument normalisation; this direct form costs a few µs, which matters at 10k flows/s.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from vmshadow.domain.net import IPAddress

_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133,
    135: 136, 136: 135, 139: 140, 140: 139, 144: 145, 145: 144,
}  # fmt: skip
_PORT_PROTOCOLS = frozenset({1, 6, 17, 58, 132})


def community_id(src: IPAddress, dst: IPAddress, protocol: int, src_port: int, dst_port: int, seed: int = 0) -> str:
    """The `1:<base64>` Community ID of a flow. For ICMP, ports are (type, code)."""
    return packed_community_id(src.packed, dst.packed, protocol, src_port, dst_port, seed)


def packed_community_id(saddr: bytes, daddr: bytes, protocol: int, src_port: int, dst_port: int, seed: int = 0) -> str:
    """`community_id` from the addresses in network byte order (as `inet_pton` gives them)."""
    one_way = False
    if protocol in (1, 58):
        pairs = _ICMP4_PAIRS if protocol == 1 else _ICMP6_PAIRS
        mtype = src_port
        if mtype in pairs:
            src_port, dst_port = mtype, pairs[mtype]
        else:
            one_way = True
    if not one_way and (saddr > daddr or (saddr == daddr and src_port > dst_port)):
        saddr, daddr, src_port, dst_port = daddr, saddr, dst_port, src_port
    data = struct.pack("!H", seed) + saddr + daddr + struct.pack("BB", protocol, 0)
    if protocol in _PORT_PROTOCOLS:
        data += struct.pack("!HH", src_port, dst_port)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()
