"""SSH password guessing with hydra against the OpenSSH server `LabServices` runs in the target VMN."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from vmshadow.domain.finding import FindingKind
from vmshadow.lab.scenarios.base import Expectation, NamespaceProcesses, Scenario
from vmshadow.lab.scenarios.services import SSH_PORT
from vmshadow.lab.state import LabHost

BRUTE_FORCE_TARGET_S = 10.0  # issue 5: brute force found within 10 s
BASE_WORDS = ("123456", "password", "admin", "root", "qwerty", "letmein", "welcome", "monkey", "dragon", "master",
              "shadow", "sunshine", "princess", "football", "baseball", "iloveyou", "trustno1", "superman", "hello",
              "freedom", "whatever", "passw0rd", "starwars", "secret", "changeme", "toor", "debian", "ubuntu",
              "server", "guest")  # fmt: skip
# A guessing list as hydra users feed it: common words, then the same with a digit. sshd allows MaxAuthTries (6)
# guesses per connection, so 120 words make about 20 connections.
WORDS = BASE_WORDS + tuple(f"{w}{n}" for n in (1, 2, 3) for w in BASE_WORDS)


@dataclass
class HydraSSH(Scenario):
    """hydra with `tasks` parallel connections tries `len(words)` passwords for one user (who cannot log in: the
    server refuses every guess), so the number of tries is bounded by the word list."""

    attacker: LabHost
    target: LabHost
    user: str = "vmsguest"
    words: tuple[str, ...] = WORDS
    tasks: int = 4
    name: ClassVar[str] = "hydra_ssh"
    max_s: float = 60.0

    @property
    def expected(self) -> Expectation:
        return Expectation(FindingKind.BRUTE_FORCE, self.attacker.name, BRUTE_FORCE_TARGET_S)

    def drive(self, stop: threading.Event) -> None:
        with tempfile.TemporaryDirectory(prefix="vms-hydra-") as d, NamespaceProcesses() as procs:
            wordlist = Path(d) / "words.txt"
            wordlist.write_text("\n".join(self.words) + "\n")
            argv = ["hydra", "-I", "-q", "-t", str(self.tasks), "-w", "5", "-l", self.user, "-P", str(wordlist),
                    f"ssh://{self.target.address.ip}:{SSH_PORT}"]  # fmt: skip
            rc = procs.run(self.attacker.namespace, argv, timeout_s=self.max_s, cwd=d)  # hydra.restore goes to cwd
        self.outcome = f"hydra exit {rc} after {len(self.words)} passwords"
