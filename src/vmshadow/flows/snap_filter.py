"""Make the kernel cut what it copies into a meter's packet socket at the snap length.

libpcap on Linux reads through a TPACKET_V3 ring and cuts packets to the snap length in user space: it rewrites
every `ret` of a socket filter to 262,144 bytes (its `fix_program`), and without a filter the kernel copies a packet
into the ring whole, up to the ring's block size. A shadow port receives TCP as GSO super-packets of up to 64 KB, so
each copy cost a 64 KB memcpy in the softirq of the CPU that sent the live packet (perf: `tpacket_rcv` ->
`skb_copy_bits`), and a 32 MiB ring held only ~500 of them. A classic BPF socket filter of one instruction,
`ret #snaplen`, makes `tpacket_rcv` copy `snaplen` bytes; the packet's length (`tp_len`) is still the whole
packet's, so flows count their bytes as before.

The filter goes on after libpcap has activated the capture, inside nfstream's capture process: `patch_nfstream`
wraps nfstream's `activate_capture` (nfstream forks that process, which inherits the wrapper). It counts on
nfstream 6.6 (pinned) setting no filter of its own when given none; the live source tests fail if that changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import struct
from typing import Any

import nfstream.meter

_log = logging.getLogger(__name__)

SO_ATTACH_FILTER = 26
BPF_RET_K = 0x06  # BPF_RET | BPF_K: accept this many bytes of the packet


def attach(fd: int, snaplen: int) -> None:
    """Attach `ret #snaplen` to the socket `fd` (replacing any filter it had)."""
    program = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, snaplen))
    fprog = struct.pack("HL", 1, ctypes.addressof(program))  # struct sock_fprog {len; *filter}
    sock = socket.socket(fileno=fd)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    finally:
        sock.detach()  # the fd stays libpcap's


def packet_sockets() -> list[int]:
    """This process's AF_PACKET sockets (file descriptors)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=fd)
            try:
                if sock.family == socket.AF_PACKET:
                    found.append(fd)
            finally:
                sock.detach()
    return found


def patch_nfstream(snaplen: int) -> None:
    """Make nfstream's capture process cut copies at `snaplen` in the kernel once its capture is active."""
    activate = nfstream.meter.activate_capture

    def activate_and_cut(capture: Any, lib: Any, error_child: Any, bpf_filter: Any, mode: Any) -> Any:
        active = activate(capture, lib, error_child, bpf_filter, mode)
        if active and bpf_filter is None:
            for fd in packet_sockets():
                try:
                    attach(fd, snaplen)
                except OSError as exc:  # the capture still works, at the old cost: say so, do not stop metering
                    _log.warning("capture fd %d: copies not cut at %d bytes: %s", fd, snaplen, exc)
        return active

    nfstream.meter.activate_capture = activate_and_cut
