"""`read_ahead`: an iterator run in a thread of its own, a bounded number of items ahead of its consumer.

Capture files are metered one after the other, each by a meter process nfstream starts when its flows are first
asked for. Read in the analysing thread, a file's meter starts only once the previous file's last flow has been
analysed, so metering and analysis take turns. Read ahead, the meter of the next file runs while the detectors
still work through the flows of the one before (measured in docs/benchmarks.md).

nfstream forks its meter from the reading thread then. Only that thread lives on in the child, which runs nfstream's
meter and vmshadow's record hooks (flows/records.py) on a queue of its own: they share no lock with the analysing
thread but the standard streams', which nfstream's meter writes to only to warn that it could not pin itself to CPUs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.1  # how often a blocked reader looks whether its consumer has gone


class _End:
    """The reader is done (its iterator ended, or raised `error`)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def read_ahead(
    items: Callable[[], Iterator[T]], max_items: int, *, name: str = "read-ahead"
) -> Generator[T, None, None]:
    """The items of `items()`, in order, read by a daemon thread up to `max_items` ahead. An exception of the
    reader is raised here, after the items before it. Closing this generator (or leaving a loop over it) stops
    the reader at its next item."""
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    handed: queue.Queue[T | _End] = queue.Queue(maxsize=max_items)
    gone = threading.Event()

    def hand(item: T | _End) -> bool:
        while not gone.is_set():
            try:
                handed.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        source = items()
        error: BaseException | None = None
        try:
            for item in source:
                if not hand(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            error = exc
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        hand(_End(error))

    reader = threading.Thread(target=read, name=name, daemon=True)
    reader.start()
    try:
        while True:
            item = handed.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        gone.set()
