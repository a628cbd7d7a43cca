"""What nfstream's meter process hands over for each flow: the fields vmshadow reads, not the whole `NFlow`.

nfstream pickles every `NFlow` (about 90 slots, 2.2 KB) in its meter process and unpickles it in the process that
iterates the streamer: 16.8 us per flow there, more than `to_flow` itself, and about as much again to pickle it in
the meter. `compact_records()` makes an `NFlow` pickle as a `FlowRecord` of the fields `to_flow` and the live
meter read (a named tuple, unpickled in C). The meter also copies only those fields out
of its C flow, once, when the flow expires (`_lean_init`, `_lean_sync`): nfstream copies ~90 when a flow starts
and ~80 again when it expires, 170 cffi reads per flow. nfstream forks its meter process when the
iteration starts, so the meter inherits the change; it is undone once the meter runs, so any other `NFStreamer`
of the process sees nfstream as it is. Tied to nfstream 6.6 (pinned), like the LRU fix in live.py:
tests/unit/flows/test_records.py fails if the streamer's records change.

The meter also hands its flows over in batches (`FlowBatch`, up to 256 flows per queue item) instead of one queue
item per flow: each item costs a lock, a pipe write and a read, a wake-up of the queue's feeder thread (which takes
the GIL from the meter) and a pickle header, ~25 us of CPU per flow on this machine across the two processes
(measured with 60,000 records: 2.4 s one by one, 0.5 s in batches of 256). A batch goes out when it is full,
before any other item (an error, the end) and after every idle scan of the meter (every 10 ms of meter time), so
no flow waits longer than that. The streamer's queue is made smaller in items by the same factor, but holds at
least `MIN_QUEUE_ITEMS` (a live meter's batches are often a flow or two), so it holds at most 65,536 full flows
where nfstream held 32,767.
"""

from __future__ import annotations

import inspect
import itertools
import operator
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import nfstream.meter
import nfstream.streamer
from nfstream.flow import NFlow
from nfstream.utils import NFEvent

BATCH_FLOWS = 256
MIN_QUEUE_ITEMS = 256  # the streamer's queue in batches, at least (nfstream's 32,767 / 256 is 127)


class FlowRecord(NamedTuple):
    """The fields of an `NFlow` that vmshadow reads. A tuple: it unpickles through `tuple.__new__`, in C, where a
    class with slots runs its `__init__` (0.27 against 1.6 us per record, and half the bytes). No `id`: records
    reach the streamer's loop inside a `FlowBatch`, whose `id` it reads and rewrites."""

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


RECORD_FIELDS: tuple[str, ...] = FlowRecord._fields
_values = operator.attrgetter(*RECORD_FIELDS)
_nflow_init = NFlow.__init__
_nflow_sync = NFlow.sync


def _reduce(flow: NFlow) -> tuple[Any, tuple[type[FlowRecord], tuple[Any, ...]]]:
    return tuple.__new__, (FlowRecord, _values(flow))


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


class FlowBatch:
    """Flows the meter hands over as one queue item. The streamer's loop takes it for one record (it reads and
    rewrites its `id`); `compact_flows` unpacks it."""

    __slots__ = ("flows", "id")

    def __init__(self, flows: list[Any]) -> None:
        self.id = NFEvent.FLOW
        self.flows = flows

    def __reduce__(self) -> tuple[type[FlowBatch], tuple[list[Any]]]:
        return FlowBatch, (self.flows,)


class _Batcher:
    """The meter's end of the streamer's queue: flows are gathered into batches, anything else goes at once."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.flows: list[Any] = []

    def put(self, item: Any) -> None:
        if isinstance(item, NFlow):
            self.flows.append(item)
            if len(self.flows) >= BATCH_FLOWS:
                self.flush()
            return
        self.flush()  # an error or the end comes after the flows before it
        self.channel.put(item)

    def flush(self) -> None:
        if self.flows:
            self.channel.put(FlowBatch(self.flows))
            self.flows = []


_meter_workflow = nfstream.meter.meter_workflow
_meter_scan = nfstream.meter.meter_scan
_CHANNEL_ARG = list(inspect.signature(_meter_workflow).parameters).index("channel")


def _batching_workflow(*args: Any) -> None:
    """nfstream's meter process, with its queue behind a `_Batcher`."""
    given = list(args)
    given[_CHANNEL_ARG] = _Batcher(given[_CHANNEL_ARG])
    _meter_workflow(*given)


def _scan_then_flush(meter_tick: int, cache: Any, idle_timeout: int, channel: Any, *rest: Any) -> int:
    """nfstream's idle scan, then what the batch holds goes out: no flow waits longer than a scan period."""
    expired = int(_meter_scan(meter_tick, cache, idle_timeout, channel, *rest))
    if isinstance(channel, _Batcher):
        channel.flush()
    return expired


class _BatchContext:
    """The streamer's multiprocessing context, with its flow queue `BATCH_FLOWS` times smaller in items but at
    least `MIN_QUEUE_ITEMS` long: the meter's backpressure, and its memory, stay within twice where nfstream put
    them."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802 - the multiprocessing name
        return self._context.Queue(maxsize=max(MIN_QUEUE_ITEMS, maxsize // BATCH_FLOWS) if maxsize > 0 else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


_lock = threading.Lock()
_depth = 0  # blocks running now (streamers may start in several threads)


@contextmanager
def compact_records() -> Iterator[None]:
    """While the block runs, an `NFlow` pickles as a `FlowRecord` and a meter started hands its flows over in
    `FlowBatch`es: iterate a streamer through `compact_batches` (or `compact_flows`), which starts it inside the
    block and unpacks them."""
    global _depth
    with _lock:
        _depth += 1
        NFlow.__reduce__ = _reduce
        NFlow.__init__ = _lean_init
        NFlow.sync = _lean_sync
        nfstream.streamer.meter_workflow = _batching_workflow  # the meter process's target, read at its start
        nfstream.meter.meter_scan = _scan_then_flush
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                del NFlow.__reduce__  # back to object.__reduce__: NFlow defines none
                NFlow.__init__ = _nflow_init
                NFlow.sync = _nflow_sync
                nfstream.streamer.meter_workflow = _meter_workflow
                nfstream.meter.meter_scan = _meter_scan


def compact_batches(streamer: Any) -> Iterator[list[Any]]:
    """A streamer's records, in the batches the meter handed over (every flow comes in one: `_Batcher`): nfstream
    forks its meter at the first item, so that one is asked for inside `compact_records`, and the meter keeps the
    change for the rest."""
    if not streamer.statistical_analysis:  # a record carries the TCP flag counts: its pickling would fail in the meter
        raise ValueError("compact_batches needs a streamer with statistical_analysis=True")
    if not isinstance(streamer._mp_context, _BatchContext):
        streamer._mp_context = _BatchContext(streamer._mp_context)
    items: Iterator[Any] = iter(streamer)
    with compact_records():
        first = next(items, None)
    if first is None:
        return
    for batch in itertools.chain((first,), items):
        yield batch.flows


def compact_flows(streamer: Any) -> Iterator[Any]:
    """A streamer's records, one by one (see `compact_batches`)."""
    for batch in compact_batches(streamer):
        yield from batch
