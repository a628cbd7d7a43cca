"""One TM change at a time per network namespace: other processes and other threads wait, the holder may nest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from vmshadow.app import tm_lock
from vmshadow.domain.errors import BackendUnavailableError


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tm_lock, "LOCK_DIR", tmp_path)
    return tmp_path


def test_another_process_holding_the_lock_makes_a_change_wait_then_fail_naming_the_lock(lock_dir: Path) -> None:
    held, release = lock_dir / "held", lock_dir / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import pathlib, time
            from vmshadow.app import tm_lock
            tm_lock.LOCK_DIR = pathlib.Path({str(lock_dir)!r})
            with tm_lock.tm_locked("vms-x"):
                pathlib.Path({str(held)!r}).touch()
                deadline = time.monotonic() + 30
                while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
        """)]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not held.exists():
            assert time.monotonic() < deadline, "the holder never took the lock"
            assert holder.poll() is None, "the holder died"
            time.sleep(0.02)
        with pytest.raises(BackendUnavailableError, match=r"tm-vms-x\.lock"), tm_locked_for("vms-x", 0.3):
            pass
        with tm_locked_for("vms-other", 0.3):  # another namespace has a table (and a lock) of its own
            pass
        release.touch()
        with tm_locked_for("vms-x", 20):  # taken as soon as the holder lets go
            pass
    finally:
        release.touch()
        holder.wait(timeout=30)


def tm_locked_for(netns: str, wait_s: float):  # type: ignore[no-untyped-def]
    return tm_lock.tm_locked(netns, wait_s=wait_s)


def test_threads_take_turns_and_the_holder_may_nest() -> None:
    inside, overlaps = [0], [0]

    def change() -> None:
        with tm_lock.tm_locked(None), tm_lock.tm_locked(None):  # nested: no deadlock
            inside[0] += 1
            if inside[0] > 1:
                overlaps[0] += 1
            time.sleep(0.02)
            inside[0] -= 1

    threads = [threading.Thread(target=change) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert overlaps == [0]
