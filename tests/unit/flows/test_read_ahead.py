"""`read_ahead`: items in order, the reader's error after them, a bound on how far ahead, and a reader that stops
when its consumer goes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.datadir import shared_data
from vmshadow.flows.pcap import PcapSource
from vmshadow.flows.read_ahead import read_ahead

WAIT_S = 10.0


def test_items_come_in_order() -> None:
    assert list(read_ahead(lambda: iter(range(1000)), 7)) == list(range(1000))


def test_the_readers_error_comes_after_its_items() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("broken at 3")

    ahead = read_ahead(items, 4)
    assert [next(ahead), next(ahead)] == [1, 2]
    with pytest.raises(ValueError, match="broken at 3"):
        next(ahead)


def test_the_reader_stays_within_its_bound_and_stops_when_the_consumer_goes() -> None:
    read: list[int] = []
    finished = threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in range(10_000):
                read.append(i)
                yield i
        finally:
            finished.set()

    ahead = read_ahead(items, 5)
    assert next(ahead) == 0
    # the reader fills the queue (5 items) and holds one more it cannot hand over, and waits there
    assert finished.wait(0) is False
    assert _within(WAIT_S, lambda: len(read) == 7), read
    assert not _within(0.5, lambda: len(read) > 7), read  # a reader past its bound would be further by now
    ahead.close()
    assert finished.wait(WAIT_S), "the reader did not stop after its consumer went"
    assert len(read) <= 8


def _within(timeout_s: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_items"):
        next(read_ahead(lambda: iter([1]), 0))


def test_several_captures_give_the_flows_of_each_in_turn() -> None:
    data = shared_data()
    paths: list[Path] = [data / "ndpi/pcap/synscan.pcap", data / "zeek/traces/ssh/sshguess.pcap",
                         data / "esnet-scanners/nmap_80_all.pcap"]  # fmt: skip
    one_by_one = [flow for path in paths for flow in PcapSource([path])]
    assert len(one_by_one) > 2000
    assert list(PcapSource(paths)) == one_by_one
