"""`collector_paused`: Python's cyclic garbage collector held off during a bulk load.

A million-line feed becomes millions of small objects that all live on (indicators, index nodes). Each of them
counts towards the collector's thresholds, so it runs full passes again and again over everything loaded so far:
40 % of a million-line list's parse and index time on this machine (bench/intel.py). Nothing loaded forms
reference cycles, so pausing the collector frees nothing late; it resumes (if it was on) when the load ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
