"""The exporter: the configured sinks, each behind its disk-backed queue, drained by a delivery thread per sink.

`Exporter.publish(events)` filters the events per sink and enqueues them (one SQLite transaction per sink,
durable before `publish` returns), so a caller acknowledges its input only after the events are stored. A
delivery thread per sink drains its queue with the `Deliverer` in bounded batches, backing off exponentially
while the receiver is away; `close()` stops the threads (what is still queued is delivered after the next start).
`drain()` delivers in the calling thread instead, for one-shot commands (`vmshadow analyze --settings`).

Threads: SQLite connections belong to the thread that opened them. `publish`, `stats`, `drain` and `close` are
called from the thread that built the `Exporter`; each delivery thread opens its own connection to its queue.

`export_test` sends one `sample_event` straight through a sink (no queue) and says what happened;
`read_queue_stats` reads a queue file without writing to it (for `/metrics` in another process).
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vmshadow.config.settings import (
    ExportSettings,
    FileSinkSettings,
    Settings,
    SinkSettings,
    SyslogMessage,
    SyslogSinkSettings,
    WebhookSinkSettings,
)
from vmshadow.domain.errors import InputError, Issue
from vmshadow.domain.finding import Finding
from vmshadow.domain.proposal import Proposal
from vmshadow.export.delivery import Deliverer, DeliveryReport
from vmshadow.export.event import ExportEvent, from_finding, from_proposal, sample_event
from vmshadow.export.queue import COUNTERS, DiskQueue, QueueStats
from vmshadow.export.sinks import FileSink, Sink, SinkError, SyslogSink, WebhookSink
from vmshadow.export.syslog5424 import MessageFormat, SyslogFormat

BATCH_SIZE = 200
MAX_BATCHES_PER_DRAIN = 50
DRAIN_SLICE_S = 5.0  # one delivery step; the thread checks for stop between steps
IDLE_POLL_S = 1.0  # an idle thread looks at its queue this often even without a publish
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0


def build_sink(settings: SinkSettings, *, sleep: Callable[[float], None] = time.sleep) -> Sink:
    """The sink a configuration names. A sink that cannot be built here (a bad certificate, a webhook secret not
    read) is an `InputError` located at the sink in the settings file."""
    target = settings.target
    try:
        if isinstance(target, FileSinkSettings):
            return FileSink(target.path, max_bytes=target.max_bytes, backups=target.backups, name=settings.name)
        if isinstance(target, SyslogSinkSettings):
            message = MessageFormat.CEF if target.format is SyslogMessage.CEF else MessageFormat.TEXT
            syslog_format = SyslogFormat(hostname=socket.gethostname(), procid=str(os.getpid()), msg=message)
            return SyslogSink(
                host=target.host,
                port=target.port,
                transport=target.transport,
                format=syslog_format,
                tls=target.tls,
                name=settings.name,
            )
        return _webhook(settings, target, sleep)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise InputError(settings.issue(f"sink {settings.name!r} cannot be set up: {exc}")) from None


def _webhook(settings: SinkSettings, target: WebhookSinkSettings, sleep: Callable[[float], None]) -> WebhookSink:
    if target.secret is None:
        raise InputError(settings.issue(f"the webhook secret (environment variable {target.secret_env}) was not read"))
    return WebhookSink(
        url=target.url,
        secret=target.secret,
        timeout_s=target.timeout_s,
        max_attempts=target.retries + 1,
        max_total_s=max(30.0, (target.retries + 1) * target.timeout_s),
        name=settings.name,
        sleep=sleep,
    )


@dataclass(frozen=True, slots=True)
class SinkStats:
    """One sink's queue now: `duplicates` counts events sent again after an attempt that may have reached the
    receiver (an upper bound of what it saw twice)."""

    name: str
    depth: int
    dead: int
    enqueued: int
    delivered: int
    failures: int
    duplicates: int
    rejected: int
    oldest_age_s: float | None
    last_error: str | None = None

    @classmethod
    def of(cls, name: str, q: QueueStats, last_error: str | None = None) -> SinkStats:
        return cls(
            name=name,
            depth=q.depth,
            dead=q.dead,
            enqueued=q.enqueued,
            delivered=q.delivered,
            failures=q.failures,
            duplicates=q.resent,
            rejected=q.rejected,
            oldest_age_s=q.oldest_age_s,
            last_error=last_error,
        )


def events_of(findings: Iterable[Finding], proposals: Iterable[Proposal]) -> list[ExportEvent]:
    """The export events for stored findings and proposals."""
    return [*(from_finding(f) for f in findings), *(from_proposal(p) for p in proposals)]


class _Lane:
    """One sink: its settings, sink, the owner thread's queue connection, and its delivery thread."""

    def __init__(self, settings: SinkSettings, queue_path: Path, stop: threading.Event) -> None:
        self.settings = settings
        self.queue_path = queue_path
        self.stop = stop
        self.sink = build_sink(settings, sleep=self._sleep)
        self.queue = DiskQueue(queue_path)
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)  # a backoff wait ends at once when the exporter closes

    def _clock(self) -> float:
        # once the exporter closes, every drain deadline has passed: the drain ends after the current batch
        return math.inf if self.stop.is_set() else time.monotonic()

    def deliverer(self, queue: DiskQueue) -> Deliverer:
        return Deliverer(
            queue,
            _NotingSink(self),
            batch_size=BATCH_SIZE,
            retry_initial_s=RETRY_INITIAL_S,
            retry_max_s=RETRY_MAX_S,
            clock=self._clock,
            sleep=self._sleep,
        )

    def note(self, error: str | None) -> None:
        with self._lock:
            self.last_error = error

    def error(self) -> str | None:
        with self._lock:
            return self.last_error

    def run(self) -> None:
        """The delivery loop: bounded drains until stopped; after a failed attempt, wait the backoff."""
        queue = DiskQueue(self.queue_path)
        try:
            deliverer = self.deliverer(queue)
            while not self.stop.is_set():
                try:
                    report = deliverer.drain(max_batches=MAX_BATCHES_PER_DRAIN, timeout_s=DRAIN_SLICE_S)
                except Exception as exc:  # a bug or a broken queue file: keep the thread, show it, try later
                    self.note(f"delivery failed unexpectedly: {exc!r}")
                    self.stop.wait(RETRY_MAX_S)
                    continue
                if report.failed_attempts and not report.empty:
                    self.stop.wait(deliverer.next_retry_s)
                elif report.empty:
                    self.wake.wait(IDLE_POLL_S)
                    self.wake.clear()
        finally:
            queue.close()


class _NotingSink:
    """The lane's sink, remembering the last failure (or its absence) as each batch ends, for `stats()`."""

    def __init__(self, lane: _Lane) -> None:
        self.lane = lane
        self.name = lane.sink.name

    def send(self, events: Sequence[ExportEvent]) -> None:
        try:
            self.lane.sink.send(events)
        except SinkError as exc:
            self.lane.note(str(exc))
            raise
        self.lane.note(None)

    def close(self) -> None:
        self.lane.sink.close()


class Exporter:
    """Every configured sink with its queue (`<queue_dir>/<name>.db`). Build it at start: a sink that cannot run
    here is an `InputError` before anything is published."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._lanes: list[_Lane] = []
        try:
            for sink in settings.sinks:
                self._lanes.append(_Lane(sink, settings.queue_path(sink.name), self._stop))
        except BaseException:
            self._close_lanes()
            raise
        self._started = False

    @property
    def sink_names(self) -> list[str]:
        return [lane.settings.name for lane in self._lanes]

    def publish(self, events: Sequence[ExportEvent]) -> dict[str, int]:
        """Enqueue, per sink, the events its filter accepts; stored durably when this returns.

        Returns how many events each sink newly queued (an event id already waiting is not queued twice)."""
        added: dict[str, int] = {}
        for lane in self._lanes:
            accepted = [e for e in events if lane.settings.filter.accepts(e)]
            added[lane.settings.name] = lane.queue.enqueue(accepted) if accepted else 0
            if accepted:
                lane.wake.set()
        return added

    def publish_stored(self, findings: Sequence[Finding], proposals: Sequence[Proposal]) -> dict[str, int]:
        """`publish` the events of findings and proposals just stored (the `EmbeddedService.on_stored` hook)."""
        return self.publish(events_of(findings, proposals))

    def start(self) -> None:
        """Start one delivery thread per sink."""
        if self._started:
            return
        self._started = True
        for lane in self._lanes:
            lane.thread = threading.Thread(target=lane.run, name=f"export-{lane.settings.name}", daemon=True)
            lane.thread.start()

    def drain(self, *, timeout_s: float = 30.0, max_batches: int = 1000) -> dict[str, DeliveryReport]:
        """Deliver what is queued in the calling thread, each sink bounded by `timeout_s` and `max_batches`.

        Only while no delivery thread runs (before `start`, or for one-shot commands)."""
        if self._started:
            raise RuntimeError("drain() is for an exporter without delivery threads")
        reports: dict[str, DeliveryReport] = {}
        for lane in self._lanes:
            reports[lane.settings.name] = lane.deliverer(lane.queue).drain(max_batches=max_batches, timeout_s=timeout_s)
        return reports

    def stats(self) -> dict[str, SinkStats]:
        return {
            lane.settings.name: SinkStats.of(lane.settings.name, lane.queue.stats(), lane.error())
            for lane in self._lanes
        }

    def close(self, *, join_timeout_s: float = 10.0) -> None:
        """Stop the delivery threads (a backoff wait ends at once) and close queues and sinks."""
        self._stop.set()
        for lane in self._lanes:
            lane.wake.set()
        deadline = time.monotonic() + join_timeout_s
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._close_lanes()

    def _close_lanes(self) -> None:
        for lane in self._lanes:
            lane.queue.close()
            lane.sink.close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------- test


@dataclass(frozen=True, slots=True)
class ExportTestReport:
    """What `vmshadow export test SINK` did: the sample event sent straight through the sink (no queue)."""

    sink: str
    type: str
    event_id: str
    delivered: bool
    error: str | None = None
    retryable: bool | None = None  # for a failure: would the queue try again?
    filter_accepts: bool = True  # whether the sink's filter would take the sample event in normal operation
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "sink": self.sink,
            "type": self.type,
            "event_id": self.event_id,
            "delivered": self.delivered,
            "error": self.error,
            "retryable": self.retryable,
            "filter_accepts": self.filter_accepts,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def export_test(settings: Settings, sink_name: str, *, now: datetime | None = None) -> ExportTestReport:
    """Send one `sample_event` through the named sink directly and report what happened.

    An unknown sink name, or a sink that cannot be set up, is an `InputError`; a delivery failure is a report."""
    configured = settings.export.sink(sink_name)
    if configured is None:
        names = ", ".join(s.name for s in settings.export.sinks) or "none configured"
        raise InputError(Issue(settings.source, f"no sink named {sink_name!r}; sinks: {names}", field="export.sinks"))
    event = sample_event(now or datetime.now(UTC), sink=sink_name)
    sink = build_sink(configured)
    started = time.monotonic()
    try:
        sink.send([event])
    except SinkError as exc:
        return ExportTestReport(
            sink=sink_name,
            type=str(configured.type),
            event_id=event.id,
            delivered=False,
            error=str(exc),
            retryable=exc.retryable,
            filter_accepts=configured.filter.accepts(event),
            elapsed_s=time.monotonic() - started,
        )
    finally:
        sink.close()
    return ExportTestReport(
        sink=sink_name,
        type=str(configured.type),
        event_id=event.id,
        delivered=True,
        filter_accepts=configured.filter.accepts(event),
        elapsed_s=time.monotonic() - started,
    )


# ------------------------------------------------------------------------------------------------ metrics


def read_queue_stats(path: Path) -> QueueStats | None:
    """A queue file's stats, read-only (another process owns the queue); None when there is no such queue yet."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return None
    try:
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        depth = int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
        oldest = db.execute("SELECT MIN(enqueued_at) FROM pending").fetchone()[0]
        dead = int(db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return QueueStats(
        depth=depth,
        dead=dead,
        oldest_age_s=None if oldest is None else max(0.0, time.time() - float(oldest)),
        **{c: int(counters.get(c, 0)) for c in COUNTERS},
    )


def export_stats(settings: ExportSettings) -> dict[str, SinkStats | None]:
    """Every configured sink's queue stats, read-only; None for a sink whose queue does not exist yet."""
    out: dict[str, SinkStats | None] = {}
    for sink in settings.sinks:
        q = read_queue_stats(settings.queue_path(sink.name))
        out[sink.name] = None if q is None else SinkStats.of(sink.name, q)
    return out
