"""Sinks: where export events go. Each `send` either confirms the whole batch or raises `SinkError`.

    VmshadowError
     └── SinkError                 a batch was not (wholly) delivered; `delivered` leading events were
          (retryable=True)         the receiver is away or slow: keep the events and try again later
          (retryable=False)        the receiver refused them (HTTP 4xx): retrying the same bytes cannot help

What "confirmed" means per sink:
- `FileSink`: the lines are written and fsynced.
- `SyslogSink` over TCP or TLS: the batch goes over one connection, RFC 6587 octet-counted; then vmshadow closes
  its side (a TLS close_notify first) and waits for the receiver to close too. A receiver closes only after reading
  everything before the close, so a clean close means the receiving process has read every message; a reset (the
  receiver died or stopped with unread data) or a timeout fails the batch and it is sent again. This is what makes
  delivery across receiver restarts lose nothing without RELP.
- `SyslogSink` over UDP: the datagrams left this host. UDP cannot confirm more: use it only where loss is
  acceptable (the queue still protects against vmshadow-side failures).
- `WebhookSink`: the receiver answered 2xx. 5xx, 408, 429, timeouts and connection errors are retried inside the
  call with exponential backoff (bounded in attempts and total time), then reported retryable; other 4xx fail at
  once, not retryable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from vmshadow.domain.errors import VmshadowError
from vmshadow.export.ecs import to_ecs, to_ecs_json
from vmshadow.export.event import ExportEvent
from vmshadow.export.syslog5424 import SyslogFormat, format_5424

SIGNATURE_HEADER = "X-Vmshadow-Signature"


class SinkError(VmshadowError):
    """A batch was not delivered whole. The first `delivered` events were confirmed; the rest were not.

    `possibly_sent` is False when nothing can have reached the receiver (it could not even be connected to): the
    events are then not counted as possible duplicates when they are sent again.
    """

    def __init__(self, message: str, *, retryable: bool, delivered: int = 0, possibly_sent: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.delivered = delivered
        self.possibly_sent = possibly_sent


class Sink(Protocol):
    """One destination. `send` returns only when every event is confirmed, else raises `SinkError`."""

    name: str

    def send(self, events: Sequence[ExportEvent]) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------- file


class FileSink:
    """ECS JSON lines appended to `path`; when a write would pass `max_bytes` the file is rotated
    (`path` -> `path.1` -> ... -> `path.<backups>`, the oldest dropped)."""

    def __init__(self, path: Path | str, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 5, name: str = "file"):
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be positive and backups not negative")
        self.name = name
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.path.exists():
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def send(self, events: Sequence[ExportEvent]) -> None:
        done = 0  # lines written and fsynced
        try:
            lines = [(to_ecs_json(e) + "\n").encode() for e in events]
            size = self.path.stat().st_size if self.path.exists() else 0
            out = self.path.open("ab")
            try:
                for n, line in enumerate(lines):
                    if size and size + len(line) > self.max_bytes:
                        out.flush()
                        os.fsync(out.fileno())
                        out.close()
                        done = n
                        self._rotate()
                        out = self.path.open("ab")
                        size = 0
                    out.write(line)
                    size += len(line)
                out.flush()
                os.fsync(out.fileno())
            finally:
                out.close()
            done = len(lines)
        except OSError as exc:
            raise SinkError(f"{self.name}: cannot write {self.path}: {exc}", retryable=True, delivered=done) from exc

    def close(self) -> None:
        return None


# -------------------------------------------------------------------------------------------------- syslog


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """RFC 5425 client side: the CA that signed the receiver's certificate, optionally a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None  # name to verify; the host by default
    verify: bool = True

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


def octet_frame(message: str) -> bytes:
    """RFC 6587 octet counting: `<length> <message>` (length in bytes of the UTF-8 message)."""
    data = message.encode()
    return f"{len(data)} ".encode() + data


UDP_MAX = 65507


@dataclass
class SyslogSink:
    """RFC 5424 messages to a syslog receiver over UDP, TCP (octet counting) or TLS (RFC 5425)."""

    host: str
    port: int
    transport: Transport = Transport.TCP
    format: SyslogFormat = field(default_factory=SyslogFormat)
    tls: TLSOptions | None = None
    timeout_s: float = 5.0
    name: str = "syslog"
    _ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)
    _udp: socket.socket | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.transport is Transport.TLS:
            self._ssl = (self.tls or TLSOptions()).context()

    def send(self, events: Sequence[ExportEvent]) -> None:
        messages = [format_5424(e, self.format) for e in events]
        if self.transport is Transport.UDP:
            self._send_udp(messages)
        else:
            self._send_stream(b"".join(octet_frame(m) for m in messages), len(messages))

    def _send_udp(self, messages: list[str]) -> None:
        for n, message in enumerate(messages):
            data = message.encode()
            if len(data) > UDP_MAX:
                raise SinkError(
                    f"{self.name}: message of {len(data)} bytes is too big for UDP", retryable=False, delivered=n
                )
            try:
                if self._udp is None:
                    family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0][0]
                    self._udp = socket.socket(family, socket.SOCK_DGRAM)
                    self._udp.settimeout(self.timeout_s)
                    self._udp.connect((self.host, self.port))
                self._udp.send(data)
            except OSError as exc:
                self.close()
                raise SinkError(
                    f"{self.name}: udp {self.host}:{self.port}: {exc}", retryable=True, delivered=n
                ) from exc

    def _send_stream(self, payload: bytes, count: int) -> None:
        where = f"{self.name}: {self.transport} {self.host}:{self.port}"
        deadline = time.monotonic() + self.timeout_s + len(payload) / 1_000_000  # 1 MB/s at worst, plus the timeout
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise SinkError(f"{where}: cannot connect: {exc}", retryable=True, possibly_sent=False) from exc
        sock: socket.socket = raw
        try:
            if self._ssl is not None:
                server_name = (self.tls.server_name if self.tls else None) or self.host
                sock = self._ssl.wrap_socket(raw, server_hostname=server_name)
            sock.sendall(payload)
            if isinstance(sock, ssl.SSLSocket):
                sock = _close_tls(sock)
            sock.shutdown(socket.SHUT_WR)
            _await_close(sock, deadline)
        except ssl.SSLCertVerificationError as exc:
            raise SinkError(f"{where}: certificate refused: {exc}", retryable=True) from exc
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"{where}: {count} messages not confirmed: {exc!r}", retryable=True) from exc
        finally:
            sock.close()
            raw.close()

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None


def _close_tls(sock: ssl.SSLSocket) -> socket.socket:
    """Send close_notify and take the receiver's; a receiver that just closes TCP after reading is fine too."""
    try:
        return sock.unwrap()
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return sock  # the receiver closed the TCP connection after reading: what we wait for anyway


def _await_close(sock: socket.socket, deadline: float, max_reads: int = 10_000) -> None:
    """Read (and drop) until the receiver closes; a reset or the deadline raises."""
    for _ in range(max_reads):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("receiver did not close the connection in time")
        sock.settimeout(remaining)
        try:
            data = sock.recv(4096)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return
        if not data:
            return
    raise TimeoutError("receiver kept talking instead of closing")


# ------------------------------------------------------------------------------------------------- webhook


def signature(secret: bytes, body: bytes) -> str:
    """The value of `X-Vmshadow-Signature`: `sha256=<hex HMAC-SHA256 of the exact body>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str) -> bool:
    """Receiver side: constant-time check of a signature header."""
    return hmac.compare_digest(signature(secret, body), header)


RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass
class WebhookSink:
    """A JSON POST per batch: `{"events": [<ECS document>, ...]}`, signed with HMAC-SHA256 of the body."""

    url: str
    secret: bytes
    timeout_s: float = 5.0
    max_attempts: int = 4
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 5.0
    max_total_s: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str = "webhook"
    sleep: Callable[[float], None] = time.sleep
    attempts_made: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s): {self.url!r}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def body(self, events: Sequence[ExportEvent]) -> bytes:
        return json.dumps({"events": [to_ecs(e) for e in events]}, ensure_ascii=False, sort_keys=True).encode()

    def send(self, events: Sequence[ExportEvent]) -> None:
        body = self.body(events)
        headers = {
            **self.headers,
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "vmshadow-export",
            SIGNATURE_HEADER: signature(self.secret, body),
        }
        started = time.monotonic()
        delay = self.backoff_initial_s
        waited = 0.0
        last = ""
        reached = False
        for attempt in range(1, self.max_attempts + 1):
            self.attempts_made += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                    response.read(65536)
                    return
            except urllib.error.HTTPError as exc:
                exc.close()
                if 400 <= exc.code < 500 and exc.code not in RETRYABLE_STATUS:
                    raise SinkError(
                        f"{self.name}: {self.url} refused the batch: HTTP {exc.code}", retryable=False
                    ) from exc
                last = f"HTTP {exc.code}"
                reached = True
            except (urllib.error.URLError, OSError) as exc:
                last = f"{exc}"
                refused = isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)
                reached = reached or not refused
            # `waited` counts the sleeps too when `sleep` does not pass real time (tests)
            if attempt == self.max_attempts or max(time.monotonic() - started, waited) + delay > self.max_total_s:
                break
            self.sleep(delay)
            waited += delay
            delay = min(delay * 2, self.backoff_max_s)
        raise SinkError(
            f"{self.name}: {self.url}: gave up after {attempt} attempts: {last}", retryable=True, possibly_sent=reached
        )

    def close(self) -> None:
        return None
