"""A command-and-control beacon: curl checks in with the C2 host every `interval_s` +/- `jitter`, `count` times."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

from vmshadow.domain.finding import FindingKind
from vmshadow.lab.scenarios.base import Expectation, NamespaceProcesses, Scenario, pause
from vmshadow.lab.scenarios.services import HTTP_PORT
from vmshadow.lab.state import LabHost

OTHER_TARGET_S = 60.0  # issue 5: every other attack found within 60 s


@dataclass
class CurlBeacon(Scenario):
    """`count` HTTP check-ins (a new connection each, a small request and answer), uniformly jittered by
    +/- `jitter` of `interval_s`; `seed` makes the jitter repeatable."""

    beacon: LabHost
    c2: LabHost
    interval_s: float = 5.0
    jitter: float = 0.2
    count: int = 16  # ~80 s: hunting.beaconing judges a fast beacon from 10 check-ins over 30 s (docs/scenarios.md)
    seed: int = 5
    name: ClassVar[str] = "curl_beacon"

    @property
    def max_s(self) -> float:  # type: ignore[override]
        return self.count * self.interval_s * (1 + self.jitter) + 30

    @property
    def expected(self) -> Expectation:
        return Expectation(FindingKind.BEACONING, self.beacon.name, OTHER_TARGET_S)

    def drive(self, stop: threading.Event) -> None:
        rng = random.Random(self.seed)  # noqa: S311 - timing jitter, not a secret
        url = f"http://{self.c2.address.ip}:{HTTP_PORT}/task?agent=7f3a"
        deadline = time.monotonic() + self.max_s
        ok = 0
        with NamespaceProcesses() as procs:
            for i in range(self.count):
                started = time.monotonic()
                rc = procs.run(self.beacon.namespace, ["curl", "-s", "-o", "/dev/null", "-m", "5", url], timeout_s=10)
                ok += rc == 0
                self.outcome = f"{ok} of {i + 1} check-ins answered"
                if i == self.count - 1 or time.monotonic() > deadline:
                    return
                wait = self.interval_s * (1 + rng.uniform(-self.jitter, self.jitter)) - (time.monotonic() - started)
                if pause(stop, wait):
                    return
