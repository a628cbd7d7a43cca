"""At-least-once delivery end to end: receiver outages, resets mid-batch, a killed vmshadow process, webhooks.

Receivers are small servers on 127.0.0.1 (tests/unit/export/receivers.py). Every case checks that every event
arrived, and that the duplicates a receiver saw are no more than what the deliverer counted as resent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from tests.factories import make_finding
from tests.unit.export.receivers import SyslogReceiver, WebhookReceiver
from vmshadow.export.delivery import Deliverer
from vmshadow.export.event import ExportEvent, from_finding
from vmshadow.export.queue import DiskQueue
from vmshadow.export.sinks import SIGNATURE_HEADER, SyslogSink, Transport, WebhookSink, verify_signature
from vmshadow.export.syslog5424 import parse_5424

ROOT = Path(__file__).resolve().parents[2]
N = 1000


def events(n: int, prefix: str) -> list[ExportEvent]:
    base = from_finding(make_finding(0))
    return [replace(base, id=f"{prefix}-{i}", summary=f"{prefix} event {i}") for i in range(n)]


def ids(receiver: SyslogReceiver) -> Counter[str]:
    return Counter(parse_5424(m).structured_data["vmshadow@32473"]["id"] for m in receiver.received())


def assert_all_arrived(got: Counter[str], sent: list[ExportEvent], resent: int) -> int:
    missing = {e.id for e in sent} - set(got)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    duplicates = sum(got.values()) - len(got)
    assert duplicates <= resent, f"{duplicates} duplicates but only {resent} counted as resent"
    return duplicates


def test_receiver_outage_and_reset_lose_nothing(tmp_path: Path) -> None:
    receiver = SyslogReceiver().start()
    queue = DiskQueue(tmp_path / "syslog.queue")
    sink = SyslogSink("127.0.0.1", receiver.port, Transport.TCP, timeout_s=2)
    deliverer = Deliverer(queue, sink, batch_size=100, retry_initial_s=0.01, retry_max_s=0.05)
    try:
        warmup = events(10, "warm")
        queue.enqueue(warmup)
        assert deliverer.drain(timeout_s=10).delivered == 10

        receiver.stop()
        sent = events(N, "outage")
        assert queue.enqueue(sent) == N
        down = deliverer.drain(timeout_s=0.3)
        assert down.delivered == 0
        assert down.queue.depth == N
        assert down.failed_attempts >= 1
        assert down.queue.failures >= 1

        receiver.reset_after = 50  # comes back, then dies once in the middle of the first batch
        receiver.start()
        report = deliverer.drain(timeout_s=30)
        assert report.empty
        got = ids(receiver)
    finally:
        receiver.stop()
        queue.close()
    duplicates = assert_all_arrived(got, sent + warmup, report.queue.resent)
    # the reset batch was not acknowledged: all of it went again, so the half the receiver had read arrived twice;
    # attempts while the receiver was down (nothing could connect) are not counted as possible duplicates
    assert duplicates == 50
    assert report.queue.resent == 100
    assert report.queue.delivered == N + 10


def test_delivery_resumes_after_vmshadow_is_killed(tmp_path: Path) -> None:
    """A deliverer process is killed (SIGKILL) mid-drain; a new one on the same queue file finishes the job."""
    path = tmp_path / "syslog.queue"
    sent = events(N, "restart")
    with DiskQueue(path) as queue:
        queue.enqueue(sent)
    receiver = SyslogReceiver().start()
    receiver.delay_s = 0.01  # slow enough to be killed half way
    child_code = (
        "import sys\n"
        "from vmshadow.export.delivery import Deliverer\n"
        "from vmshadow.export.queue import DiskQueue\n"
        "from vmshadow.export.sinks import SyslogSink, Transport\n"
        "q = DiskQueue(sys.argv[1])\n"
        "Deliverer(q, SyslogSink('127.0.0.1', int(sys.argv[2]), Transport.TCP), batch_size=10).drain(timeout_s=60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, str(path), str(receiver.port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(receiver.received()) < 200:
            assert child.poll() is None, "the deliverer finished before it could be killed"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        before = len(receiver.received())
        assert 200 <= before < N

        receiver.delay_s = 0
        with DiskQueue(path) as queue:  # the restarted process: a new queue object on the same file
            assert 0 < queue.depth() <= N - before + 10
            sink = SyslogSink("127.0.0.1", receiver.port, Transport.TCP)
            report = Deliverer(queue, sink, batch_size=100).drain(timeout_s=30)
        assert report.empty
        got = ids(receiver)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        receiver.stop()
    duplicates = assert_all_arrived(got, sent, report.queue.resent)
    # at most the batch in flight when it was killed arrives twice, and it was counted
    assert duplicates <= 10
    assert report.queue.resent <= 10


def test_webhook_outage_5xx_and_signatures(tmp_path: Path) -> None:
    secret = b"hook secret"
    sent = events(300, "hook")
    with WebhookReceiver([500, 502]) as receiver, DiskQueue(tmp_path / "hook.queue") as queue:
        queue.enqueue(sent)
        # first a receiver that is not there at all
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            nobody = s.getsockname()[1]
        away = WebhookSink(f"http://127.0.0.1:{nobody}/", secret, max_attempts=1, timeout_s=0.5)
        assert Deliverer(queue, away, retry_initial_s=0.01).drain(timeout_s=0.2).delivered == 0
        assert queue.depth() == 300
        sink = WebhookSink(receiver.url, secret, backoff_initial_s=0.01)
        report = Deliverer(queue, sink, batch_size=100).drain(timeout_s=30)
        assert report.empty
        assert sink.attempts_made == 5  # two 500s retried inside the first batch, then three batches
    got: Counter[str] = Counter()
    for headers, body in receiver.requests:
        assert verify_signature(secret, body, headers[SIGNATURE_HEADER])
        assert not verify_signature(b"wrong", body, headers[SIGNATURE_HEADER])
    for _headers, body in receiver.requests[2:]:  # the accepted ones
        got.update(e["event"]["id"] for e in json.loads(body)["events"])
    assert_all_arrived(got, sent, report.queue.resent)
    assert sum(got.values()) == 300
