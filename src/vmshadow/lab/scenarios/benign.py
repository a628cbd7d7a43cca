"""A benign mix, per client VMN and for `duration_s`: web downloads after a DNS lookup, an NTP-like UDP exchange,
one interactive-looking SSH session, and periodic backup-like uploads. Timings are random around human or
daemon rates (seeded), sizes vary, as they do for real work; nothing here should be blocked or alerted on."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from vmshadow.lab.scenarios.base import Expectation, NamespaceProcesses, Scenario, pause
from vmshadow.lab.scenarios.dns import lookup
from vmshadow.lab.scenarios.netns_socket import ns_socket
from vmshadow.lab.scenarios.services import (
    BENIGN_NAMES,
    HTTP_PORT,
    SSH_PORT,
    TIME_PORT,
    UPLOAD_PORT,
    LabServices,
)
from vmshadow.lab.state import LabHost

WEB_NAMES = tuple(n for n in BENIGN_NAMES if not n.startswith(("time.", "backup.")))
MAX_DURATION_S = 4 * 3600.0


@dataclass
class BenignMix(Scenario):
    """Benign traffic from every VMN in `clients` for `duration_s`. Mean gaps: a download every
    `download_every_s` (exponential, like a person browsing), a time exchange every `time_every_s` (+/- 5 %,
    like ntpd), a backup upload of 0.2-3 MB every `backup_every_s` (+/- 10 %); keystrokes in the SSH session
    every 0.2-3 s. The SSH session goes to `services.ssh_target` (skipped for that VMN itself)."""

    services: LabServices
    clients: Sequence[LabHost]
    duration_s: float = 600.0
    download_every_s: float = 20.0
    time_every_s: float = 32.0
    backup_every_s: float = 120.0
    seed: int = 1
    name: ClassVar[str] = "benign_mix"

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"benign mix duration {self.duration_s} s is outside 0..{MAX_DURATION_S:.0f} s")

    @property
    def max_s(self) -> float:  # type: ignore[override]
        return self.duration_s + 30

    @property
    def expected(self) -> Expectation | None:
        return None

    def drive(self, stop: threading.Event) -> None:
        end = time.monotonic() + self.duration_s
        done = threading.Event()
        activities: list[Callable[[LabHost, random.Random, float, threading.Event], None]] = [
            self._browse, self._keep_time, self._back_up, self._ssh_session,
        ]  # fmt: skip
        threads = []
        for i, client in enumerate(self.clients):
            for j, activity in enumerate(activities):
                rng = random.Random(self.seed * 1000 + i * 10 + j)  # noqa: S311 - timings, not secrets
                t = threading.Thread(target=activity, args=(client, rng, end, done), daemon=True)
                t.start()
                threads.append(t)
        try:
            while time.monotonic() < end and not stop.is_set():
                stop.wait(min(0.5, max(0.0, end - time.monotonic())))
        finally:
            done.set()
            for t in threads:
                t.join(timeout=15)

    def _browse(self, client: LabHost, rng: random.Random, end: float, done: threading.Event) -> None:
        dns = str(self.services.dns.address.ip)
        with NamespaceProcesses() as procs:
            while not pause(done, min(rng.expovariate(1 / self.download_every_s), end - time.monotonic())):
                if time.monotonic() >= end:
                    return
                name = rng.choice(WEB_NAMES)
                address = lookup(client.namespace, dns, name)
                if address is None:
                    continue
                size = int(rng.lognormvariate(11.5, 1.2))  # median ~100 kB, a long tail
                url = f"http://{address}:{HTTP_PORT}/bytes/{size}"
                procs.run(client.namespace, ["curl", "-s", "-o", "/dev/null", "-m", "20", "-H", f"Host: {name}", url],
                          timeout_s=25)  # fmt: skip

    def _keep_time(self, client: LabHost, rng: random.Random, end: float, done: threading.Event) -> None:
        server = lookup(client.namespace, str(self.services.dns.address.ip), "time.corp.test")
        if server is None:
            return
        with ns_socket(client.namespace, socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", TIME_PORT))  # noqa: S104 - inside the VMN; ntpd talks from port 123 to port 123
            sock.settimeout(1.0)
            first = rng.uniform(0, 5)
            while not pause(done, first):
                first = self.time_every_s * rng.uniform(0.95, 1.05)
                if time.monotonic() >= end:
                    return
                request = bytes([0x23]) + bytes(47)  # NTP v4 client mode, 48 bytes
                with contextlib.suppress(OSError):
                    sock.sendto(request, (server, TIME_PORT))
                    sock.recv(512)

    def _back_up(self, client: LabHost, rng: random.Random, end: float, done: threading.Event) -> None:
        url = f"http://{self.services.web.address.ip}:{UPLOAD_PORT}/backup/{client.name}"
        with NamespaceProcesses() as procs:
            gap = rng.uniform(5, self.backup_every_s)  # clients do not all start together
            while not pause(done, min(gap, end - time.monotonic())):
                gap = self.backup_every_s * rng.uniform(0.9, 1.1)
                if time.monotonic() >= end:
                    return
                size = rng.randint(200_000, 3_000_000)
                script = f"head -c {size} /dev/urandom | curl -s -o /dev/null -m 30 -T - {url}"
                procs.run(client.namespace, ["sh", "-c", script], timeout_s=35)

    def _ssh_session(self, client: LabHost, rng: random.Random, end: float, done: threading.Event) -> None:
        target = self.services.ssh_target
        if client.name == target.name:
            return
        argv = ["ssh", "-T", "-i", str(self.services.client_key), "-o", "BatchMode=yes", "-o",
                "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=QUIET",
                "-p", str(SSH_PORT), f"root@{target.address.ip}", "cat"]  # fmt: skip
        with NamespaceProcesses() as procs:
            if pause(done, rng.uniform(0, 3)):
                return
            session = procs.start(client.namespace, argv, stdin=subprocess.PIPE)
            assert session.stdin is not None
            while not pause(done, rng.uniform(0.2, 3.0)) and time.monotonic() < end:
                line = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(1, 20)))
                try:
                    session.stdin.write((line + "\n").encode())
                    session.stdin.flush()
                except (BrokenPipeError, OSError):
                    return
            with contextlib.suppress(OSError):
                session.stdin.close()
