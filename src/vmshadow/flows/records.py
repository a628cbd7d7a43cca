"""What nfstream's meter process hands over for each flow: the fields vmshadow reads, not the whole `NFlow`.

nfstream pickles every `NFlow` (about 90 slots, 2.2 KB) in its meter process and unpickles it in the process that
iterates the streamer: 16.8 us per flow there, more than `to_flow` itself, and about as much again to pickle it in
the meter. `compact_records()` makes an `NFlow` pickle as a `FlowRecord` of the fields `to_flow` and the live
meter read, plus `id`, which the streamer's loop reads and rewrites. The meter also copies only those fields out
of its C flow, once, when the flow expires (`_lean_init`, `_lean_sync`): nfstream copies ~90 when a flow starts
and ~80 again when it expires, 170 cffi reads per flow. nfstream forks its meter process when the
iteration starts, so the meter inherits the change; it is undone once the meter runs, so any other `NFStreamer`
of the process sees nfstream as it is. Tied to nfstream 6.6 (pinned), like the LRU fix in live.py:
tests/unit/flows/test_records.py fails if the streamer's records change.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nfstream.flow import NFlow
from nfstream.utils import NFEvent


@dataclass(slots=True)
class FlowRecord:
    id: int
    src_ip: str
    src_mac: str
    src_port: int
    dst_ip: str
    dst_mac: str
    dst_port: int
    protocol: int
    bidirectional_first_seen_ms: int
    bidirectional_last_seen_ms: int
    src2dst_packets: int
    src2dst_bytes: int
    dst2src_packets: int
    dst2src_bytes: int
    bidirectional_syn_packets: int
    bidirectional_rst_packets: int
    bidirectional_psh_packets: int
    bidirectional_fin_packets: int
    application_name: str
    application_category_name: str
    application_is_guessed: int
    requested_server_name: str
    user_agent: str
    client_fingerprint: str
    server_fingerprint: str


RECORD_FIELDS: tuple[str, ...] = tuple(FlowRecord.__dataclass_fields__)
_values = operator.attrgetter(*RECORD_FIELDS)
_nflow_init = NFlow.__init__
_nflow_sync = NFlow.sync


def _reduce(flow: NFlow) -> tuple[type[FlowRecord], tuple[Any, ...]]:
    return FlowRecord, _values(flow)


def _text(ffi: Any, value: Any) -> str:
    return str(ffi.string(value).decode("utf-8", errors="ignore"))


def _lean_init(self: Any, packet: Any, ffi: Any, lib: Any, udps: Any, sync: Any, accounting_mode: Any,
               n_dissections: int, statistics: Any, splt: int, dissector: Any, decode_tunnels: Any,
               system_visibility_mode: int) -> None:  # fmt: skip
    """`NFlow.__init__` without copying ~90 fields out of the C flow: `_lean_sync` copies the record's fields
    once, at expiry (the meter reads only `id`, `expiration_id` and the C flow meanwhile). With plugins, packet
    arrays, process visibility, no statistics or no dissection, nfstream's own."""
    if sync or splt or system_visibility_mode or not statistics or not n_dissections:
        _nflow_init(self, packet, ffi, lib, udps, sync, accounting_mode, n_dissections, statistics, splt,
                    dissector, decode_tunnels, system_visibility_mode)  # fmt: skip
        return
    self.id = NFEvent.FLOW
    self.expiration_id = 0
    self._C = lib.meter_initialize_flow(packet, accounting_mode, statistics, splt, n_dissections, dissector, sync)
    if self._C == ffi.NULL:  # as nfstream: the meter handles it
        raise OSError("Not enough memory for new flow creation.")
    for name in _DISSECTION_FIELDS:  # as nfstream without plugins: set at expiry unless detection is over
        setattr(self, name, None)
    self.src_ip = ""  # marks a lean flow for `_lean_sync`


def _lean_sync(self: Any, n_dissections: int, statistics: Any, splt: int, ffi: Any, lib: Any, sync_mode: Any) -> None:
    """`NFlow.sync` for a lean flow: the record's fields only (nfstream's own for a whole one)."""
    if self.src_ip != "":
        _nflow_sync(self, n_dissections, statistics, splt, ffi, lib, sync_mode)
        return
    c = self._C
    self.src_ip, self.dst_ip = _text(ffi, c.src_ip_str), _text(ffi, c.dst_ip_str)
    self.src_mac, self.dst_mac = _text(ffi, c.src_mac_str), _text(ffi, c.dst_mac_str)
    self.src_port, self.dst_port, self.protocol = c.src_port, c.dst_port, c.protocol
    self.bidirectional_first_seen_ms = c.bidirectional_first_seen_ms
    self.bidirectional_last_seen_ms = c.bidirectional_last_seen_ms
    self.src2dst_packets, self.src2dst_bytes = c.src2dst_packets, c.src2dst_bytes
    self.dst2src_packets, self.dst2src_bytes = c.dst2src_packets, c.dst2src_bytes
    self.bidirectional_syn_packets, self.bidirectional_rst_packets = (
        c.bidirectional_syn_packets,
        c.bidirectional_rst_packets,
    )
    self.bidirectional_psh_packets, self.bidirectional_fin_packets = (
        c.bidirectional_psh_packets,
        c.bidirectional_fin_packets,
    )
    if c.detection_completed < 2:
        self.application_name = _text(ffi, c.application_name)
        self.application_category_name = _text(ffi, c.category_name)
        self.requested_server_name = _text(ffi, c.requested_server_name)
        self.client_fingerprint = _text(ffi, c.c_hash)
        self.server_fingerprint = _text(ffi, c.s_hash)
        self.user_agent = _text(ffi, c.user_agent)
        self.application_is_guessed = c.guessed


_DISSECTION_FIELDS = (
    "application_name", "application_category_name", "application_is_guessed", "requested_server_name",
    "client_fingerprint", "server_fingerprint", "user_agent",
)  # fmt: skip


_lock = threading.Lock()
_depth = 0  # blocks running now (streamers may start in several threads)


@contextmanager
def compact_records() -> Iterator[None]:
    """While the block runs, an `NFlow` pickles as a `FlowRecord`; start the streamer's iteration inside it."""
    global _depth
    with _lock:
        _depth += 1
        NFlow.__reduce__ = _reduce
        NFlow.__init__ = _lean_init
        NFlow.sync = _lean_sync
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                del NFlow.__reduce__  # back to object.__reduce__: NFlow defines none
                NFlow.__init__ = _nflow_init
                NFlow.sync = _nflow_sync


def compact_flows(streamer: Iterable[Any]) -> Iterator[Any]:
    """A streamer's records: nfstream forks its meter at the first one, so that one is asked for inside
    `compact_records`, and the meter keeps the change for the rest."""
    records = iter(streamer)
    with compact_records():
        first = next(records, None)
    if first is None:
        return
    yield first
    yield from records
