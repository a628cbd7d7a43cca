"""One TM change at a time per network namespace, across processes.

The TM's changes are read-modify-write: `apply_proposal` reads the TMRSet in force and puts it back with one rule
more; the CLI, the API, `vmshadow run` (adoption, measuring) and a second administrator may do so at once. Two
such changes interleaved would lose one (the second writes a set read before the first was applied). The nftables
table is one per network namespace, so the lock is too: an advisory `flock` on `<LOCK_DIR>/tm-<netns>.lock`, held
for the whole unit of work. A process already holding it may take it again (nested units of work do not deadlock).
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vmshadow.domain.errors import BackendUnavailableError

LOCK_DIR = Path(os.environ.get("VMSHADOW_LOCK_DIR", "/run/vmshadow"))
WAIT_S = 30.0  # an apply of 10,000 TMRs takes about a second: a longer wait means a stuck process

_locks: dict[str, threading.RLock] = {}  # lock path -> the threads of this process take turns through it
_guard = threading.Lock()
_local = threading.local()  # per thread: lock path -> depth (a thread holding the lock may take it again)


def lock_path(netns: str | None) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", netns) if netns else "root"
    return LOCK_DIR / f"tm-{name}.lock"


def _busy(path: Path, wait_s: float) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"another vmshadow process has been changing the TMRs for over {wait_s:.0f} s (lock {path}); "
        f"try again, or find the process holding it (fuser {path})"
    )


@contextmanager
def tm_locked(netns: str | None, *, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the TM lock of `netns` (None: this process's namespace) for the block; `BackendUnavailableError`
    naming the lock file when another process (or thread) holds it for longer than `wait_s`."""
    path = lock_path(netns)
    key = str(path)
    depth: dict[str, int] = _local.__dict__.setdefault("depth", {})
    if depth.get(key, 0):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    with _guard:
        turn = _locks.setdefault(key, threading.RLock())
    deadline = time.monotonic() + wait_s
    if not turn.acquire(timeout=wait_s):
        raise _busy(path, wait_s)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise _busy(path, wait_s) from None
                    time.sleep(0.02)
            depth[key] = 1
            try:
                yield
            finally:
                depth[key] = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        turn.release()
