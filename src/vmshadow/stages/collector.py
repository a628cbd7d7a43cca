"""The cyclic garbage collector's thresholds for a process that analyses flows.

The detectors keep per-key state for their windows (episodes, conversations, models): on a spoofed flood
hundreds of thousands of small objects that all live on. With CPython's default young-generation threshold
(700 net allocations) the collector runs every few dozen flows, and its older-generation passes walk that
state again and again: a quarter of the detectors' time on the spoofed SYN flood of bench/analyze.py
(22 -> 16.6 us per flow over materialised flows with a threshold of 10,000; off altogether: 15.6 us).
With a young generation of 10,000 the collector runs ~14 times less often (cycles are still collected), at the
cost of up to that many container objects waiting a little longer to be freed: about a megabyte.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune_for_analysis() -> tuple[int, int, int]:
    """Raise the young-generation threshold to `YOUNG_THRESHOLD` (never lower it); returns the thresholds before."""
    before = gc.get_threshold()
    young, middle, old = before
    if young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return before
