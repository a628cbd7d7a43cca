"""`LiveSource`: flows metered live on shadow ports (nfstream/nDPI reading each port through libpcap).

One meter process per shadow port (spawned: nfstream forks its own capture process, and forking from one of
several threads deadlocked it here), at a lower CPU priority so live traffic wins the cores. All ports feed one
bounded queue. Load shedding happens here, never in a detector: when the queue is full a flow is dropped and
counted for its VMN (queue drops); the kernel counts what a meter's socket could not take (socket drops).

nfstream emits a flow only when it expires, and it checks expiry only when packets arrive, so a tiny heartbeat
is sent through every shadow port every 0.5 s; what the shadow port itself sends is filtered out by its MAC.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import nfstream.meter
import nfstream.streamer
from nfstream import NFStreamer

from vmshadow.domain.flow import Flow
from vmshadow.domain.vmn import VMNMap
from vmshadow.flows.pcap import N_DISSECTIONS, to_flow
from vmshadow.flows.records import compact_flows
from vmshadow.flows.snap_filter import patch_nfstream

HEARTBEAT_GROUP = "ff02::1"  # all nodes on the link: stays on the shadow port, needs no address
HEARTBEAT_PORT = 9  # discard
HEARTBEAT_INTERVAL_S = 0.5
IDLE_TIMEOUT_S = 2  # nfstream needs integers; short, so early findings are not held back
ACTIVE_TIMEOUT_S = 60
METER_NICENESS = 10
# The capture ring per shadow port (kernel memory, per VMN). libpcap's default (2 MiB) held too few copies of a
# fast upload while the meter (at SCHED_IDLE) was busy, when each copy took its whole 64 KB GSO packet: a 64 MiB
# upload was metered as 9.4-12.9 MB (docs/scenarios.md). Cut at the snap length (flows/snap_filter.py), a copy takes
# ~1.6 KB: 8 MiB holds ~5,000, a default budget's burst (500) and two seconds of its rate over.
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
_PROCESSED, _IGNORED, _SOCKET_DROPPED, _QUEUE_DROPPED, _FLOWS, _TRACKED_AT, _SEQ = range(7)
_N_COUNTERS = _SEQ + 1


@dataclass(frozen=True, slots=True)
class MeteredPort:
    """A shadow port as the meter sees it: copies arrive on `reader`; heartbeats are sent out of `sender`."""

    vmn: str
    reader: str
    sender: str


@dataclass
class PortHealth:
    """Counters for one shadow port.

    Packets as the meter read them (a shadow port may receive GSO-merged packets): `processed` (IP packets),
    `ignored` (non-IP, e.g. ARP), `socket_dropped` (the kernel could not hand them to the meter), and
    `heartbeats` (ours, sent before the meter's last count: included in `processed` once it has caught up).
    Flows: `flows` produced, `queue_dropped` shed because the analysis fell behind.
    """

    vmn: str
    interface: str
    processed: int = 0
    ignored: int = 0
    socket_dropped: int = 0
    queue_dropped: int = 0
    flows: int = 0
    heartbeats: int = 0
    error: str = ""

    @property
    def analysed(self) -> int:
        """Mirrored packets the meter read: what it processed and ignored, less our heartbeats."""
        return max(0, self.processed + self.ignored - self.heartbeats)


def _track_into(counters: Any) -> None:
    """Make nfstream's meter write its counters straight into `counters`, with the time it took them.

    nfstream's capture process keeps the socket drops and its processed/ignored packet counts in shared values it
    refreshes about once a second and shows only to its report timer. Reading them when a flow came out lagged
    them by up to that second plus the flow's wait, while our heartbeats were counted as sent: `analysed` came out
    short by the heartbeats of that time (a CI run saw 4 under load). With the time each count was taken, the
    heartbeats subtracted are those sent before it: exactly the ones it counted once the meter has caught up.
    Written under a sequence number (odd while writing) so a reader never pairs one update's counts with another's
    time. Tied to nfstream 6.6's `capture_track` (pinned); the live source tests fail if that changes.
    """

    def capture_track(lib: Any, capture: Any, mode: Any, stats: Any, _: Any, processed: int, ignored: int) -> None:
        lib.capture_stats(capture, stats, mode)
        counters[_SEQ] += 1
        counters[_SOCKET_DROPPED], counters[_PROCESSED], counters[_IGNORED] = stats.dropped, processed, ignored
        counters[_TRACKED_AT] = time.monotonic_ns()  # CLOCK_MONOTONIC: one clock for every process on the host
        counters[_SEQ] += 1

    nfstream.meter.capture_track = capture_track


def _tracked(counters: Any) -> tuple[int, int, int, int]:
    """(socket_dropped, processed, ignored, tracked_at) from one update of the meter's counters."""
    while True:
        seq = counters[_SEQ]
        values = (counters[_SOCKET_DROPPED], counters[_PROCESSED], counters[_IGNORED], counters[_TRACKED_AT])
        if seq % 2 == 0 and counters[_SEQ] == seq:
            return values


class _BeatLog:
    """When each heartbeat went out of one shadow port, to tell how many the meter had read by a given time.

    A beat's time is taken before it is sent, so a beat the meter counted is always before its count's time;
    beats older than the newest count's time are folded into `read`.
    """

    def __init__(self) -> None:
        self._sent: deque[int] = deque()
        self._read = 0
        self._lock = threading.Lock()

    def sent(self, at: int) -> None:
        """A beat went out; `at` was taken before it was sent (one sender: the times stay in order)."""
        with self._lock:
            self._sent.append(at)

    def read_by(self, tracked_at: int) -> int:
        with self._lock:
            while self._sent and self._sent[0] <= tracked_at:
                self._sent.popleft()
                self._read += 1
            return self._read


def _yield_cpu() -> None:
    """Let live traffic win the cores: SCHED_IDLE (runs only when nothing else wants the CPU), else nice.

    Measured (docs/benchmarks.md): nice 10 alone bought nothing on a host with scheduler autogroups; SCHED_IDLE
    recovered most of the TCP throughput. The lab/VMs in other sessions or cgroups also need `cpu.weight`.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        os.nice(METER_NICENESS)


def _lru_getitem(cache: OrderedDict[Any, Any], key: Any) -> Any:
    value = OrderedDict.__getitem__(cache, key)
    cache.move_to_end(key)
    return value


def _fix_nfstream_lru() -> None:
    """Make nfstream's flow cache a real LRU.

    nfstream 6.6 moves a flow to the recent end only when it is created, not when a packet updates it, and its idle
    scan stops at the first non-idle flow from the old end. So one long busy flow (the heartbeat, an open TCP
    session) at the old end held back every other flow's expiry until its active timeout (measured: no flow
    came out at all while heartbeats flowed). Touching on every lookup restores the intended order.
    """
    nfstream.meter.NFCache.__getitem__ = _lru_getitem


def _mac(interface: str) -> str:
    return Path(f"/sys/class/net/{interface}/address").read_text().strip().lower()


def send_heartbeat(sock: socket.socket, iface: str) -> None:
    """One empty UDP datagram to the all-nodes link-local group out of `iface`.

    It must be a packet the kernel sends: nfstream's capture did not see frames another packet socket injected,
    and an IPv6 link-local multicast needs no address or route on the host.
    """
    sock.sendto(b"", (HEARTBEAT_GROUP, HEARTBEAT_PORT, 0, socket.if_nametoindex(iface)))


def _meter_port(
    port: MeteredPort,
    vmn_map: VMNMap,
    snaplen: int,
    buffer_bytes: int,
    out: Any,
    counters: Any,
    errors: Any,
    stop: MpEvent,
    retire: MpEvent,
) -> None:
    """Body of one meter process: read a shadow port, send flows to `out` until `stop` (every meter) or `retire`
    (this one)."""
    os.setpgrp()  # its own process group, so a stuck meter can be killed with nfstream's capture process
    _yield_cpu()
    _track_into(counters)
    _fix_nfstream_lru()  # before the streamer forks its capture process, which inherits the class
    patch_nfstream(snaplen)  # the same: the kernel then copies at most `snaplen` bytes of each packet
    try:
        own_mac = _mac(port.sender)
        streamer = NFStreamer(
            source=port.reader,
            snapshot_length=snaplen,
            socket_buffer_size=buffer_bytes,
            idle_timeout=IDLE_TIMEOUT_S,
            active_timeout=ACTIVE_TIMEOUT_S,
            n_dissections=N_DISSECTIONS,
            statistical_analysis=True,
            n_meters=1,
        )
        for nf in compact_flows(streamer):
            if stop.is_set() or retire.is_set():
                break
            if nf.src_mac == own_mac:
                continue
            counters[_FLOWS] += 1
            try:
                out.put_nowait(to_flow(nf, vmn_map, f"shadow:{port.reader}"))
            except queue.Full:
                counters[_QUEUE_DROPPED] += 1
    except Exception as exc:  # a meter that dies must say why, not vanish
        errors.put((port.reader, f"{type(exc).__name__}: {exc}"))
    finally:
        for child in multiprocessing.active_children():  # nfstream's capture process
            child.terminate()


@dataclass
class LiveSource:
    """Flows from shadow ports, one meter process per port."""

    ports: Sequence[MeteredPort]
    vmn_map: VMNMap = field(default_factory=VMNMap)
    queue_size: int = 10_000
    snapshot_length: int = 1536
    socket_buffer_size: int = SOCKET_BUFFER_BYTES  # per port; 0: libpcap's default
    _ctx: Any = field(init=False, repr=False)
    _queue: Any = field(init=False, repr=False)
    _errors: Any = field(init=False, repr=False)
    _stop: MpEvent = field(init=False, repr=False)
    _counters: dict[str, Any] = field(init=False, repr=False)
    _procs: dict[str, Any] = field(init=False, repr=False)  # reader -> its meter process
    _retire: dict[str, MpEvent] = field(init=False, repr=False)  # reader -> the flag that stops its meter alone
    _beat: threading.Thread | None = field(init=False, repr=False, default=None)
    _beat_stop: threading.Event = field(init=False, repr=False, default_factory=threading.Event)
    _error_text: dict[str, str] = field(init=False, repr=False)
    _beats: dict[str, _BeatLog] = field(init=False, repr=False)
    _late_names: bool = field(init=False, repr=False, default=False)  # some meter's VMN map is older than ours

    def __post_init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._queue = self._ctx.Queue(maxsize=self.queue_size)
        self._errors = self._ctx.Queue()
        self._stop = self._ctx.Event()
        self._counters = {p.reader: self._ctx.Array("q", _N_COUNTERS, lock=False) for p in self.ports}
        self._beats = {p.reader: _BeatLog() for p in self.ports}
        self._procs = {}
        self._retire = {}
        self._error_text = {}

    @property
    def health(self) -> dict[str, PortHealth]:
        while True:
            try:
                reader, text = self._errors.get_nowait()
            except queue.Empty:
                break
            self._error_text[reader] = text
        out = {}
        for p in self.ports:
            c = self._counters.get(p.reader)
            if c is None:  # forgotten meanwhile (`forget_port`)
                continue
            dropped, processed, ignored, tracked_at = _tracked(c)
            beats = self._beats.get(p.reader)
            out[p.reader] = PortHealth(
                p.vmn, p.reader, processed=processed, ignored=ignored, socket_dropped=dropped,
                queue_dropped=c[_QUEUE_DROPPED], flows=c[_FLOWS], heartbeats=beats.read_by(tracked_at) if beats else 0,
                error=self._error_text.get(p.reader, ""),
            )  # fmt: skip
        return out

    def start(self) -> None:
        for p in self.ports:
            self._start_meter(p)
        self._beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        self._beat.start()

    def add_port(self, port: MeteredPort, vmn_map: VMNMap | None = None) -> bool:
        """Meter one more shadow port (a VMN that came up while the source runs); False if it is metered already.

        `vmn_map` (the VMNs as they are now, the new one included) names the new meter's flows and every meter
        started later. Meters already running keep the map they started with, so from then on `flows` names the
        destination of a flow an older meter left unnamed (a flow *to* the new VMN); the source side, the VMN
        the shadow port belongs to, is always named.
        """
        if port.reader in self._counters:
            return False
        if vmn_map is not None:
            self._late_names = self._late_names or bool(self._procs)  # meters run with an older map
            self.vmn_map = vmn_map
        self._counters[port.reader] = self._ctx.Array("q", _N_COUNTERS, lock=False)
        self._beats[port.reader] = _BeatLog()
        self.ports = [*self.ports, port]  # one assignment: the heartbeat thread and `health` see old or new
        if self._beat is not None:  # started: meter it now, else `start` will
            self._start_meter(port)
        return True

    def _start_meter(self, p: MeteredPort) -> None:
        args = (p, self.vmn_map, self.snapshot_length, self.socket_buffer_size, self._queue,
                self._counters[p.reader], self._errors)  # fmt: skip
        self._retire[p.reader] = self._ctx.Event()
        proc = self._ctx.Process(
            target=_meter_port, args=(*args, self._stop, self._retire[p.reader]), name=f"meter-{p.reader}"
        )
        proc.start()
        self._procs[p.reader] = proc

    def retire_port(self, reader: str) -> None:
        """Ask one port's meter to stop (a VMN that went away); it does at its next flow, a heartbeat's at the
        latest (~2.5 s). Its flows still open are lost, as at `stop`. `forget_port` then drops the port."""
        flag = self._retire.get(reader)
        if flag is not None:
            flag.set()

    def forget_port(self, reader: str) -> bool:
        """Drop a retired port (no more heartbeats, no health) once its meter has stopped; False while it runs.
        The meter is never killed: it may hold the flow queue's lock, which every other meter needs."""
        proc = self._procs.get(reader)
        if proc is not None and proc.is_alive():
            return False
        if proc is not None:
            proc.join(timeout=0)
        self.ports = [p for p in self.ports if p.reader != reader]  # one assignment, as in `add_port`
        for table in (self._procs, self._retire, self._counters, self._beats):
            table.pop(reader, None)
        return True

    def stop(self) -> None:
        """Stop metering. Flows still open inside the meters are lost (nfstream cannot flush them)."""
        self._stop.set()
        # each meter sees the flag at its next flow (heartbeats expire every ~2 s)
        for proc in list(self._procs.values()):
            proc.join(timeout=IDLE_TIMEOUT_S + 3)
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.join(timeout=2)
        self._beat_stop.set()
        if self._beat is not None:
            self._beat.join(timeout=2)

    def flows(self, timeout: float | None = None) -> Iterator[Flow]:
        """Flows as they expire; ends after `timeout` seconds without one (never, with None, until stopped)."""
        while True:
            try:
                item = self._queue.get(timeout=timeout if timeout is None or timeout > 0 else 0.001)
            except queue.Empty:
                return
            yield self._named(item)

    def batches(self, timeout: float | None = None, max_flows: int = 256) -> Iterator[list[Flow]]:  # 256: BATCH_FLOWS
        """Flows as they expire, in batches of what has arrived (at most `max_flows`): the first flow of a batch is
        waited for as in `flows`, the others are those already queued, so no flow waits for others to come."""
        for first in self.flows(timeout):
            batch = [first]
            while len(batch) < max_flows:
                try:
                    batch.append(self._named(self._queue.get_nowait()))
                except queue.Empty:
                    break
            yield batch

    def _named(self, flow: Flow) -> Flow:
        if self._late_names and flow.dst_vmn is None:  # a dict lookup or two; only once VMNs were adopted
            name = self.vmn_map.identify(flow.dst_mac, flow.dst_ip)
            if name is not None:
                return replace(flow, dst_vmn=name)
        return flow

    def _heartbeat(self) -> None:
        # Beats go on until every meter has stopped: a meter notices the stop flag only on its next flow. A new
        # socket (so a new source port, a new one-packet flow) per beat: each beat's flow expires 2 s later,
        # so the meter hands over a flow, and fresh counters, at least every 0.5 s.
        while not self._beat_stop.wait(HEARTBEAT_INTERVAL_S):
            for port in self.ports:
                with (
                    contextlib.suppress(OSError),  # port down or gone: its meter reports the error
                    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock,
                ):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                    at = time.monotonic_ns()
                    send_heartbeat(sock, port.sender)
                    beats = self._beats.get(port.reader)  # None: forgotten meanwhile (`forget_port`)
                    if beats is not None:
                        beats.sent(at)
