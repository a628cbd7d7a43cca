"""`LiveSource`: flows metered live on shadow ports (nfstream/nDPI reading each port through libpcap).

One meter per shadow port, each in its own thread, all feeding one bounded queue. Load shedding happens here,
never in a detector: when the queue is full a flow is dropped and counted for its VMN (queue drops); the kernel
counts what the meter's socket could not take (socket drops). nfstream emits a flow only when it expires, and
expiry is checked only when packets arrive, so a tiny heartbeat frame is written into every shadow port every
0.5 s (its flows are filtered out).
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import nfstream.streamer
from nfstream import NFStreamer

from vmshadow.domain.flow import Flow
from vmshadow.domain.vmn import VMNMap
from vmshadow.flows.pcap import N_DISSECTIONS, to_flow

HEARTBEAT_GROUP = "ff02::1"  # all nodes on the link: stays on the shadow port, needs no address
HEARTBEAT_PORT = 9  # discard
HEARTBEAT_INTERVAL_S = 0.5
IDLE_TIMEOUT_S = 2  # nfstream needs integers; short, so early findings are not held back
ACTIVE_TIMEOUT_S = 60


@dataclass
class PortHealth:
    """Counters for one shadow port. `processed`/`socket_dropped` are packets as the meter saw them (the kernel
    may hand a shadow port GSO-merged packets); `queue_dropped`/`flows` are flows."""

    vmn: str
    interface: str
    processed: int = 0
    socket_dropped: int = 0
    queue_dropped: int = 0
    flows: int = 0
    error: str = ""


class _MeterStatsProbe:
    """Stands in for nfstream's performance-report timer to read the meter's counters instead of printing them.

    nfstream keeps per-meter shared counters (dropped, processed, ignored) and hands them only to its report
    timer; it builds that timer in the thread that iterates the streamer, so we file the counters under that
    thread. Tied to nfstream 6.6 (pinned); tests/integration/test_live_source.py fails if that changes.
    """

    by_thread: dict[int, list[list[Any]]] = {}  # noqa: RUF012  (shared registry on purpose)

    def __init__(self, interval: float, function: Any, performances: list[list[Any]], *args: Any) -> None:
        self.by_thread[threading.get_ident()] = performances

    def stop(self) -> None:
        self.by_thread.pop(threading.get_ident(), None)


nfstream.streamer.RepeatedTimer = _MeterStatsProbe


def send_heartbeat(sock: socket.socket, iface: str) -> None:
    """One empty UDP datagram to the all-nodes link-local group out of `iface`.

    It must be a packet the kernel sends: nfstream's capture does not see frames another packet socket injects,
    and an IPv6 link-local multicast needs no address or route on the host side.
    """
    sock.sendto(b"", (HEARTBEAT_GROUP, HEARTBEAT_PORT, 0, socket.if_nametoindex(iface)))


@dataclass
class LiveSource:
    """Flows from shadow ports. `ports` maps shadow interface -> VMN name."""

    ports: Mapping[str, str]
    vmn_map: VMNMap = field(default_factory=VMNMap)
    queue_size: int = 10_000
    snapshot_length: int = 1536
    health: dict[str, PortHealth] = field(init=False)
    _queue: queue.Queue[Flow | None] = field(init=False)
    _stop: threading.Event = field(init=False)
    _threads: list[threading.Thread] = field(init=False)

    def __post_init__(self) -> None:
        self.health = {iface: PortHealth(vmn, iface) for iface, vmn in self.ports.items()}
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._stop = threading.Event()
        self._threads = []

    def start(self) -> None:
        for iface in self.ports:
            t = threading.Thread(target=self._meter, args=(iface,), name=f"meter-{iface}", daemon=True)
            t.start()
            self._threads.append(t)
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        self._threads.append(beat)

    def stop(self) -> None:
        """Stop metering. Flows still open inside the meters are lost (nfstream cannot flush them)."""
        self._stop.set()
        for t in self._threads:  # each meter sees the flag at its next flow (heartbeats expire every ~2 s)
            t.join(timeout=IDLE_TIMEOUT_S + 3)
        _terminate_meters()
        self._queue.put(None)

    def flows(self, timeout: float | None = None) -> Iterator[Flow]:
        """Flows as they expire, until `stop()`; with `timeout`, also ends after that long without a flow."""
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return
            if item is None:
                return
            yield item

    def _meter(self, iface: str) -> None:
        health = self.health[iface]
        try:
            streamer = NFStreamer(
                source=iface,
                snapshot_length=self.snapshot_length,
                idle_timeout=IDLE_TIMEOUT_S,
                active_timeout=ACTIVE_TIMEOUT_S,
                n_dissections=N_DISSECTIONS,
                statistical_analysis=True,
                n_meters=1,
                performance_report=1,
            )
            stream = iter(streamer)
            for nf in stream:
                self._read_stats(health)
                if self._stop.is_set():
                    break
                if nf.dst_ip == HEARTBEAT_GROUP and nf.dst_port == HEARTBEAT_PORT:
                    continue
                flow = to_flow(nf, self.vmn_map, f"shadow:{iface}")
                health.flows += 1
                try:
                    self._queue.put_nowait(flow)
                except queue.Full:
                    health.queue_dropped += 1
        except Exception as exc:  # a meter that dies must say why, not vanish
            health.error = f"{type(exc).__name__}: {exc}"

    def _read_stats(self, health: PortHealth) -> None:
        performances = _MeterStatsProbe.by_thread.get(threading.get_ident())
        if performances:
            health.socket_dropped = sum(int(m[0].value) for m in performances)
            health.processed = sum(int(m[1].value) for m in performances)

    def _heartbeat(self) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            while not self._stop.wait(HEARTBEAT_INTERVAL_S):
                for iface in self.ports:
                    try:
                        send_heartbeat(sock, iface)
                    except OSError:
                        pass  # port down or gone: its meter reports the error


def _terminate_meters() -> None:
    """nfstream's meter processes outlive a generator that is closed early; end them (our only children)."""
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(timeout=2)
