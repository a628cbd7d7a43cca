"""What nfstream's meter process hands over for each flow: the fields vmshadow reads, not the whole `NFlow`.

nfstream pickles every `NFlow` (about 90 slots, 2.2 KB) in its meter process and unpickles it in the process that
iterates the streamer: 16.8 us per flow there, more than `to_flow` itself, and about as much again to pickle it in
the meter. `compact_records()` makes an `NFlow` pickle as a `FlowRecord` of the fields `to_flow` and the live
meter read, plus `id`, which the streamer's loop reads and rewrites. nfstream forks its meter process when the
iteration starts, so the meter inherits the change; it is undone once the meter runs, so any other `NFStreamer`
of the process sees nfstream as it is. Tied to nfstream 6.6 (pinned), like the LRU fix in live.py:
tests/unit/flows/test_records.py fails if the streamer's records change.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nfstream.flow import NFlow


@dataclass(slots=True)
class FlowRecord:
    id: int
    src_ip: str
    src_mac: str
    src_port: int
    dst_ip: str
    dst_mac: str
    dst_port: int
    protocol: int
    bidirectional_first_seen_ms: int
    bidirectional_last_seen_ms: int
    src2dst_packets: int
    src2dst_bytes: int
    dst2src_packets: int
    dst2src_bytes: int
    bidirectional_syn_packets: int
    bidirectional_rst_packets: int
    bidirectional_psh_packets: int
    bidirectional_fin_packets: int
    application_name: str
    application_category_name: str
    application_is_guessed: int
    requested_server_name: str
    user_agent: str
    client_fingerprint: str
    server_fingerprint: str


RECORD_FIELDS: tuple[str, ...] = tuple(FlowRecord.__dataclass_fields__)
_values = operator.attrgetter(*RECORD_FIELDS)


def _reduce(flow: NFlow) -> tuple[type[FlowRecord], tuple[Any, ...]]:
    return FlowRecord, _values(flow)


_lock = threading.Lock()
_depth = 0  # blocks running now (streamers may start in several threads)


@contextmanager
def compact_records() -> Iterator[None]:
    """While the block runs, an `NFlow` pickles as a `FlowRecord`; start the streamer's iteration inside it."""
    global _depth
    with _lock:
        _depth += 1
        NFlow.__reduce__ = _reduce
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                del NFlow.__reduce__  # back to object.__reduce__: NFlow defines none
