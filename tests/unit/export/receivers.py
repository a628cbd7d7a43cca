"""Small receivers on 127.0.0.1 for export tests: an RFC 6587 octet-counting syslog server and a webhook server.

Both run in a thread, record what they got, and can misbehave on purpose (reset a connection mid-batch, answer
HTTP 500). Every loop is bounded by a stop flag and a deadline.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIFETIME_S = 60.0


def parse_octet_frames(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete `<len> <msg>` frames in `buffer`, and the incomplete rest."""
    messages: list[str] = []
    while True:
        space = buffer.find(b" ")
        if space <= 0:
            return messages, buffer
        length = int(buffer[:space])
        end = space + 1 + length
        if len(buffer) < end:
            return messages, buffer
        messages.append(buffer[space + 1 : end].decode())
        buffer = buffer[end:]


class SyslogReceiver:
    """A TCP syslog receiver with octet-counted framing. `port=0` picks a free port, kept across restarts."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.messages: list[str] = []
        self.connections = 0
        self.reset_after: int | None = None  # one-shot: reset the next connection after this many messages
        self.delay_s = 0.0  # wait before reading each connection (a slow receiver)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None

    def start(self) -> SyslogReceiver:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        self._thread = None

    def received(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def _serve(self) -> None:
        assert self._listener is not None
        deadline = time.monotonic() + LIFETIME_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        self.connections += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        buffer = b""
        got = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = conn.recv(65536)
            if not data:
                break
            try:
                messages, buffer = parse_octet_frames(buffer + data)
            except ValueError:
                return  # not octet-counted syslog (e.g. a TLS hello): hang up
            if self.reset_after is not None and got + len(messages) >= self.reset_after:
                keep = messages[: self.reset_after - got]
                with self._lock:
                    self.messages.extend(keep)
                self.reset_after = None
                # die mid-batch: RST, whatever the sender still has in flight is lost
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            got += len(messages)
            with self._lock:
                self.messages.extend(messages)


@contextmanager
def syslog_receiver(port: int = 0) -> Iterator[SyslogReceiver]:
    receiver = SyslogReceiver(port).start()
    try:
        yield receiver
    finally:
        receiver.stop()


class WebhookReceiver:
    """An HTTP server recording every POST (headers and body) and answering with the next scripted status."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
