"""Integrity check of capture files before metering.

libpcap (under nfstream) stops quietly at a truncated record, so a cut capture would look like a short one.
Walking the record/block headers is cheap (no payload is read) and turns that into a clear error.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from vmshadow.domain.errors import CaptureError, Issue

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanoseconds
    b"\xa1\xb2\x3c\x4d": ">",
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    path: Path
    format: str  # "pcap" | "pcapng"
    records: int  # packets (pcap) or blocks (pcapng)


def _error(path: Path, message: str) -> CaptureError:
    return CaptureError(Issue(source=str(path), message=message))


def check_capture(path: Path) -> CaptureInfo:
    """Raise `CaptureError` unless `path` is a complete pcap or pcapng file."""
    try:
        with path.open("rb") as handle:
            if path.stat().st_size == 0:
                raise _error(path, "empty file, not a capture")
            # mmap: captures can be far larger than we want to hold in memory
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                magic = data[:4]
                if magic in _PCAP_MAGICS:
                    return CaptureInfo(path, "pcap", _walk_pcap(path, data, _PCAP_MAGICS[magic]))
                if magic == _PCAPNG_SHB:
                    return CaptureInfo(path, "pcapng", _walk_pcapng(path, data))
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except IsADirectoryError:
        raise _error(path, "is a directory, not a capture") from None
    except OSError as exc:
        raise _error(path, f"cannot read: {exc.strerror}") from None
    raise _error(path, "not a pcap or pcapng capture (unknown magic number)")


def _walk_pcap(path: Path, data: mmap.mmap, endian: str) -> int:
    if len(data) < 24:
        raise _error(path, "truncated pcap header")
    snaplen = struct.unpack_from(endian + "I", data, 16)[0]
    offset, count = 24, 0
    while offset < len(data):
        if offset + 16 > len(data):
            raise _error(path, f"truncated: packet record {count + 1} header cut at byte {offset}")
        incl_len = struct.unpack_from(endian + "I", data, offset + 8)[0]
        if incl_len > max(snaplen, 262144):
            raise _error(path, f"corrupt: packet record {count + 1} at byte {offset} claims {incl_len} bytes")
        end = offset + 16 + incl_len
        if end > len(data):
            raise _error(path, f"truncated: packet record {count + 1} at byte {offset} is cut short")
        offset, count = end, count + 1
    return count


def _walk_pcapng(path: Path, data: mmap.mmap) -> int:
    offset, count, endian = 0, 0, "<"
    while offset < len(data):
        if offset + 12 > len(data):
            raise _error(path, f"truncated: block {count + 1} header cut at byte {offset}")
        block_type = data[offset : offset + 4]
        if block_type == _PCAPNG_SHB:
            bom = data[offset + 8 : offset + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
        length = struct.unpack_from(endian + "I", data, offset + 4)[0]
        if length < 12 or length % 4:
            raise _error(path, f"corrupt: block {count + 1} at byte {offset} has length {length}")
        end = offset + length
        if end > len(data):
            raise _error(path, f"truncated: block {count + 1} at byte {offset} is cut short")
        trailer = struct.unpack_from(endian + "I", data, end - 4)[0]
        if trailer != length:
            raise _error(path, f"corrupt: block {count + 1} at byte {offset} has mismatched lengths")
        offset, count = end, count + 1
    return count
