"""How the live source pairs the meter's packet counts with the heartbeats it sent (flows/live.py)."""

from __future__ import annotations

from typing import Any

from vmshadow.flows import live
from vmshadow.flows.live import _BeatLog, _tracked


def test_only_beats_sent_before_the_count_are_subtracted() -> None:
    log = _BeatLog()
    for at in (10, 20, 30):
        log.sent(at)
    assert log.read_by(0) == 0, "a count taken before any beat includes none"
    assert log.read_by(20) == 2
    assert log.read_by(25) == 2, "the beat at 30 was not in a count taken at 25"
    assert log.read_by(30) == 3
    log.sent(40)
    assert log.read_by(30) == 3, "an older count (read again) never takes back beats already folded in"


class _Torn(list[int]):
    """Counters that a writer updates between the reader's first and second look at the sequence number."""

    def __init__(self, values: list[int], updates: list[list[int]]) -> None:
        super().__init__(values)
        self.updates = updates
        self.reads = 0

    def __getitem__(self, i: Any) -> Any:
        if i == live._SEQ:
            self.reads += 1
            if self.reads % 2 == 0 and self.updates:  # the second look of a read: a write happened meanwhile
                self[:] = self.updates.pop(0)
        return list.__getitem__(self, i)


def counters(dropped: int, processed: int, ignored: int, at: int, seq: int) -> list[int]:
    c = [0] * live._N_COUNTERS
    c[live._SOCKET_DROPPED], c[live._PROCESSED], c[live._IGNORED] = dropped, processed, ignored
    c[live._TRACKED_AT], c[live._SEQ] = at, seq
    return c


def test_a_read_never_pairs_one_updates_counts_with_anothers_time() -> None:
    torn = _Torn(counters(1, 100, 5, 1_000, 2), [counters(2, 200, 6, 2_000, 4)])
    assert _tracked(torn) == (2, 200, 6, 2_000), "a write during the read makes it read again"
    assert torn.reads == 4


def test_a_count_being_written_is_waited_for() -> None:
    torn = _Torn(counters(1, 100, 5, 1_000, 3), [counters(1, 150, 5, 1_500, 4)])
    assert _tracked(torn) == (1, 150, 5, 1_500)
