"""What every scenario shares: its expectation, the driver contract, and processes run inside lab namespaces."""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, ClassVar

from vmshadow.domain.finding import FindingKind
from vmshadow.lab.scenarios.netns_socket import ns_socket
from vmshadow.lab.state import LabHost, LabState

KILL_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the SAE should conclude about a scenario: a finding of `kind` against the VMN `offender`, within
    `target_s` of the first attack packet, and a deny scoped to the offender (`deny`) or at least an alert."""

    kind: FindingKind
    offender: str
    target_s: float
    deny: bool = True


class Scenario(abc.ABC):
    """A bounded driver: `prepared()` starts what the scenario needs (servers, tunnels) and stops it on exit;
    `drive(stop)` sends the traffic, returns when done or soon after `stop` is set, and never runs longer than
    `max_s`; it says in `outcome` what the traffic achieved. `expected` is None for benign traffic."""

    name: ClassVar[str]
    max_s: float = 120.0
    outcome: str = ""  # what the traffic achieved, filled by `drive` (exit codes, bytes moved): the report's proof

    @property
    @abc.abstractmethod
    def expected(self) -> Expectation | None: ...

    @contextlib.contextmanager
    def prepared(self) -> Iterator[None]:
        yield

    @abc.abstractmethod
    def drive(self, stop: threading.Event) -> None: ...


def outside_host(lab: LabState, base: str) -> LabHost:
    """An outside host by its base name (`dns`, `web`, `c2`), in a tagged lab or not."""
    return lab.host(f"{lab.tag}-{base}" if lab.tag else base)


def netns_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


class NamespaceProcesses:
    """Processes started inside lab namespaces, each its own session (so its children go with it); every one
    still running is terminated, then killed, when the context closes — whatever happened."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> NamespaceProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        namespace: str,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
        cwd: str | None = None,
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            netns_argv(namespace, argv), stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, start_new_session=True
        )
        self._procs.append(proc)
        return proc

    def run(self, namespace: str, argv: Sequence[str], *, timeout_s: float, cwd: str | None = None) -> int:
        """Run to the end, at most `timeout_s` (then killed); the exit code, or -9 after a kill."""
        proc = self.start(namespace, argv, cwd=cwd)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            return -signal.SIGKILL

    @staticmethod
    def stop(proc: subprocess.Popen[Any]) -> None:
        if proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        while self._procs:
            self.stop(self._procs.pop())


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str, every_s: float = 0.1) -> None:
    """Return once `condition()` holds; `TimeoutError` naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        time.sleep(every_s)


def tcp_open(namespace: str, address: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connect from `namespace` to `address:port` succeeds."""
    with ns_socket(namespace, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((address, port))
        except OSError:
            return False
        return True


def pause(stop: threading.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile."""
    return stop.wait(max(0.0, seconds))
