from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from tests.factories import make_finding
from tests.unit.export.receivers import WebhookReceiver, syslog_receiver
from vmshadow.export import sinks
from vmshadow.export.ecs import to_ecs
from vmshadow.export.event import ExportEvent, from_finding
from vmshadow.export.sinks import (
    SIGNATURE_HEADER,
    FileSink,
    SinkError,
    SyslogSink,
    TLSOptions,
    Transport,
    WebhookSink,
    octet_frame,
    signature,
    verify_signature,
)
from vmshadow.export.syslog5424 import parse_5424

SECRET = b"s3cret"


def events(n: int) -> list[ExportEvent]:
    base = from_finding(make_finding(0))
    return [replace(base, id=f"evt-{i}", summary=f"event {i}") for i in range(n)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_file_sink_writes_json_lines_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    one_line = len(json.dumps(to_ecs(events(1)[0]), ensure_ascii=False, sort_keys=True, separators=(",", ":"))) + 1
    sink = FileSink(path, max_bytes=one_line * 3, backups=2)
    sink.send(events(10))
    sink.close()
    files = [path, path.with_name("events.jsonl.1"), path.with_name("events.jsonl.2")]
    assert all(f.exists() for f in files)
    assert not path.with_name("events.jsonl.3").exists()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"]["id"] for line in lines] == ["evt-9"]
    assert len(path.with_name("events.jsonl.1").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="max_bytes"):
        FileSink(path, max_bytes=0)


def test_file_sink_without_backups_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = FileSink(path, max_bytes=10, backups=0)
    sink.send(events(3))
    assert len(path.read_text().splitlines()) == 1


def test_file_sink_failure_is_retryable(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").mkdir()
    with pytest.raises(SinkError) as err:
        FileSink(tmp_path / "events.jsonl").send(events(1))
    assert err.value.retryable


def test_octet_frame_counts_bytes_not_characters() -> None:
    assert octet_frame("ü") == b"2 \xc3\xbc"


def test_tcp_sink_is_confirmed_by_the_receivers_close() -> None:
    with syslog_receiver() as receiver:
        SyslogSink("127.0.0.1", receiver.port, Transport.TCP).send(events(50))
        # send returned: the receiver had read everything before it closed
        got = receiver.received()
    assert [parse_5424(m).structured_data["vmshadow@32473"]["id"] for m in got] == [f"evt-{i}" for i in range(50)]


def test_tcp_sink_reports_a_reset_receiver_as_retryable() -> None:
    with syslog_receiver() as receiver:
        receiver.reset_after = 10
        with pytest.raises(SinkError) as err:
            SyslogSink("127.0.0.1", receiver.port, Transport.TCP, timeout_s=2).send(events(50))
        assert err.value.retryable
        assert len(receiver.received()) == 10


def test_tcp_sink_to_nobody_is_retryable() -> None:
    with pytest.raises(SinkError, match="cannot connect") as err:
        SyslogSink("127.0.0.1", closed_port(), Transport.TCP, timeout_s=1).send(events(1))
    assert err.value.retryable


def test_tls_sink_refuses_a_plain_server() -> None:
    with syslog_receiver() as receiver:
        sink = SyslogSink("127.0.0.1", receiver.port, Transport.TLS, tls=TLSOptions(), timeout_s=1)
        with pytest.raises(SinkError) as err:
            sink.send(events(1))
        assert err.value.retryable


def test_udp_sink_sends_one_datagram_per_event() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        sink = SyslogSink("127.0.0.1", server.getsockname()[1], Transport.UDP)
        sink.send(events(3))
        got = [parse_5424(server.recv(65536).decode()).msg for _ in range(3)]
        sink.close()
    assert got == ["event 0", "event 1", "event 2"]


def test_udp_sink_refuses_oversized_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "UDP_MAX", 100)
    sink = SyslogSink("127.0.0.1", closed_port(), Transport.UDP)
    try:
        with pytest.raises(SinkError, match="too big for UDP") as err:
            sink.send(events(2))
    finally:
        sink.close()
    assert not err.value.retryable
    assert err.value.delivered == 0


def test_signature_helpers() -> None:
    header = signature(SECRET, b"{}")
    assert header.startswith("sha256=")
    assert len(header) == len("sha256=") + 64
    assert verify_signature(SECRET, b"{}", header)
    assert not verify_signature(b"other", b"{}", header)


def test_webhook_posts_signed_ecs_batches() -> None:
    with WebhookReceiver() as receiver:
        WebhookSink(receiver.url, SECRET).send(events(3))
    ((headers, body),) = receiver.requests
    assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    assert headers["Content-Type"].startswith("application/json")
    assert [e["event"]["id"] for e in json.loads(body)["events"]] == ["evt-0", "evt-1", "evt-2"]


def test_webhook_retries_5xx_with_backoff() -> None:
    sleeps: list[float] = []
    with WebhookReceiver([500, 503, 200]) as receiver:
        WebhookSink(receiver.url, SECRET, sleep=sleeps.append, backoff_initial_s=0.1).send(events(1))
    assert len(receiver.requests) == 3
    assert sleeps == [0.1, 0.2]
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1  # the same signed bytes each time


def test_webhook_gives_up_after_the_bound_as_retryable() -> None:
    sleeps: list[float] = []
    with WebhookReceiver([500] * 10) as receiver:
        sink = WebhookSink(receiver.url, SECRET, sleep=sleeps.append, max_attempts=3, backoff_initial_s=4)
        with pytest.raises(SinkError, match="gave up after 3 attempts") as err:
            sink.send(events(1))
    assert err.value.retryable
    assert sleeps == [4, 5.0]  # doubled, capped at backoff_max_s
    assert len(receiver.requests) == 3


def test_webhook_4xx_fails_without_retry_but_429_retries() -> None:
    with WebhookReceiver([400]) as receiver:
        with pytest.raises(SinkError, match="HTTP 400") as err:
            WebhookSink(receiver.url, SECRET, sleep=lambda s: None).send(events(1))
        assert not err.value.retryable
        assert len(receiver.requests) == 1
    with WebhookReceiver([429, 200]) as receiver:
        WebhookSink(receiver.url, SECRET, sleep=lambda s: None).send(events(1))
        assert len(receiver.requests) == 2


def test_webhook_connection_refused_and_timeout_are_retryable() -> None:
    sink = WebhookSink(f"http://127.0.0.1:{closed_port()}/", SECRET, sleep=lambda s: None, max_attempts=2)
    with pytest.raises(SinkError) as err:
        sink.send(events(1))
    assert err.value.retryable
    assert sink.attempts_made == 2
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        slow = WebhookSink(
            f"http://127.0.0.1:{silent.getsockname()[1]}/", SECRET, timeout_s=0.2, max_attempts=2, sleep=lambda s: None
        )
        with pytest.raises(SinkError) as err:
            slow.send(events(1))
        assert err.value.retryable


def test_webhook_total_time_bound() -> None:
    sleeps: list[float] = []
    with WebhookReceiver([500] * 10) as receiver:
        sink = WebhookSink(
            receiver.url, SECRET, sleep=sleeps.append, max_attempts=10, backoff_initial_s=1, max_total_s=2.5
        )
        with pytest.raises(SinkError):
            sink.send(events(1))
    assert sleeps == [1]  # a second wait of 2 s would pass the 2.5 s bound


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSink("file:///etc/passwd", SECRET)


def test_unreachable_receivers_say_nothing_was_sent() -> None:
    with pytest.raises(SinkError) as err:
        SyslogSink("127.0.0.1", closed_port(), Transport.TCP, timeout_s=1).send(events(1))
    assert not err.value.possibly_sent
    hook = WebhookSink(f"http://127.0.0.1:{closed_port()}/", SECRET, sleep=lambda s: None, max_attempts=2)
    with pytest.raises(SinkError) as err:
        hook.send(events(1))
    assert not err.value.possibly_sent
    with WebhookReceiver([500]) as receiver, pytest.raises(SinkError) as err:
        WebhookSink(receiver.url, SECRET, max_attempts=1).send(events(1))
    assert err.value.possibly_sent  # the receiver got the body, whatever it did with it
