"""Flow features for the anomaly models: numbers only, no DPI, none of them a time of day.

Volumes and durations are heavy-tailed, so they enter as ln(1 + x); the model's scaler then maps each feature
onto [0, 1] from what the VMN has shown so far.
"""

from __future__ import annotations

import math

from vmshadow.domain.flow import TCP, UDP, Flow

Features = dict[str, float]

FEATURE_NAMES = ("out_bytes", "in_bytes", "packets", "duration", "out_rate", "bytes_per_packet", "out_share",
                 "port_class", "tcp", "udp", "answered")  # fmt: skip


# Fixed, physical ranges of each feature (ln(1 + x) of: 70 GB, 65 M packets, 45 h, 10 GB/s, 64 kB per packet).
# A range learned from the VMN itself (min/max scaling) puts its usual traffic at the top of the range, so a
# far bigger flow falls on the same side of every split as the usual ones and is not isolated (docs/detection.md).
LIMITS: dict[str, tuple[float, float]] = {
    "out_bytes": (0.0, 25.0), "in_bytes": (0.0, 25.0), "packets": (0.0, 18.0), "duration": (0.0, 12.0),
    "out_rate": (0.0, 23.0), "bytes_per_packet": (0.0, 11.1), "out_share": (0.0, 1.0), "port_class": (0.0, 1.0),
    "tcp": (0.0, 1.0), "udp": (0.0, 1.0), "answered": (0.0, 1.0),
}  # fmt: skip


def port_class(port: int) -> float:
    """0 for well-known ports (< 1024), 0.5 for registered ones (< 49152), 1 for dynamic ones.

    >>> port_class(22), port_class(8080), port_class(50000)
    (0.0, 0.5, 1.0)
    """
    return 0.0 if port < 1024 else 0.5 if port < 49152 else 1.0


def extract_features(flow: Flow) -> Features:
    """The features of one flow, as the side that initiated it sees them."""
    duration = max(flow.duration_s, 0.0)
    packets = flow.packets
    return {
        "out_bytes": math.log1p(flow.src2dst_bytes),
        "in_bytes": math.log1p(flow.dst2src_bytes),
        "packets": math.log1p(packets),
        "duration": math.log1p(duration),
        "out_rate": math.log1p(flow.src2dst_bytes / max(duration, 0.001)),  # a one-packet flow lasts ~0 s
        "bytes_per_packet": math.log1p(flow.bytes / packets) if packets else 0.0,
        "out_share": flow.src2dst_bytes / flow.bytes if flow.bytes else 0.0,
        "port_class": port_class(flow.dst_port),
        "tcp": 1.0 if flow.protocol == TCP else 0.0,
        "udp": 1.0 if flow.protocol == UDP else 0.0,
        "answered": 1.0 if flow.answered else 0.0,
    }
