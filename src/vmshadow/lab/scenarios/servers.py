"""Small servers living in lab namespaces, run as threads of this process: an HTTP server (downloads of N bytes,
uploads read and discarded, tiny beacon answers) and a UDP time-like responder. No files are served."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vmshadow.lab.scenarios.netns_socket import ns_socket

MAX_DOWNLOAD_BYTES = 16 * 1024 * 1024
CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)


class _Handler(BaseHTTPRequestHandler):
    """GET /bytes/N answers N bytes (bounded); any other GET a short text; POST/PUT bodies are read and dropped."""

    protocol_version = "HTTP/1.1"  # keep-alive off by Connection: close below; needed for Expect: 100-continue

    def do_GET(self) -> None:
        size = 12
        if self.path.startswith("/bytes/"):
            with contextlib.suppress(ValueError):
                size = min(MAX_DOWNLOAD_BYTES, max(0, int(self.path.removeprefix("/bytes/").split("?")[0])))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        left = size
        while left > 0:
            n = min(left, CHUNK)
            self.wfile.write(_ZEROS[:n])
            left -= n

    def _sink(self) -> None:
        # `curl -T -` (stdin, size unknown) sends chunked: without reading the chunks the answer would come
        # before the body, and curl would stop after its first few kilobytes.
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._drain_chunked()
        else:
            self._drain(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def _drain(self, left: int) -> bool:
        """Read and drop `left` bytes; False when the client stopped sending first."""
        while left > 0:
            data = self.rfile.read(min(left, CHUNK))
            if not data:
                return False
            left -= len(data)
        return True

    def _drain_chunked(self) -> None:
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return  # not a chunk header (or the client went away): answer what was read
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields, up to the blank line
                return
            if not self._drain(size) or not self.rfile.readline(1024):
                return

    do_POST = _sink  # noqa: N815
    do_PUT = _sink  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: a scenario's output is its measurements


class _NamespaceHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextlib.contextmanager
def http_server(namespace: str, address: str, port: int) -> Iterator[None]:
    """An HTTP server on `address:port` inside `namespace` until the context exits."""
    server = _NamespaceHTTPServer((address, port), _Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = ns_socket(namespace, socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
    except OSError:
        server.server_close()
        raise
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def udp_responder(namespace: str, address: str, port: int, answer_bytes: int = 48) -> Iterator[None]:
    """Answers every datagram with `answer_bytes` bytes (an NTP-like server's shape) until the context exits."""
    sock = ns_socket(namespace, socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                _, peer = sock.recvfrom(2048)
            except OSError:
                continue
            with contextlib.suppress(OSError):
                sock.sendto(bytes(answer_bytes), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()
