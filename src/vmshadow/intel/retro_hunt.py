"""The retro-hunt's prefilter: which archived flows touch a listed value at all, read from their keys alone.

A retro-hunt checks millions of archived flows against new indicators. Decoding each flow and asking the detector
costs tens of microseconds; reading its addresses and names (`FlowKeys`) and asking the index costs about one. So
the archive is scanned by keys, with each distinct address asked once, and only the flows that touch a listed
value are decoded and given to `IntelMatchDetector`, which decides (validity at the flow's time, direction,
repeats) exactly as it does live. The prefilter ignores validity, so it never drops a flow the detector would
report. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vmshadow.intel.index import IndicatorIndex
from vmshadow.ports.store import FlowKeys

MAX_REMEMBERED = 1_000_000  # distinct addresses remembered while scanning; beyond it, the memo starts over


@dataclass
class Scanned:
    """How many flows a scan read (set when it ends)."""

    flows: int = 0


def touching(index: IndicatorIndex, keys: Iterable[FlowKeys], scanned: Scanned | None = None) -> Iterator[str]:
    """Ids of the flows whose addresses, DNS query, SNI, HTTP Host or fingerprints any indicator lists."""
    listed: dict[str, bool] = {}  # address text -> listed (flows repeat their addresses: ask once)
    count = 0
    for count, (flow_id, src, dst, dns_query, sni, http_host, client_fp, server_fp) in enumerate(keys, start=1):  # noqa: B007
        hit = False
        for address in (dst, src):
            known = listed.get(address)
            if known is None:
                if len(listed) >= MAX_REMEMBERED:
                    listed.clear()
                known = listed[address] = index.match_ip(address, None) is not None
            hit = hit or known
        if (
            hit
            or ((dns_query or sni or http_host) and _names_listed(index, dns_query, sni, http_host))
            or ((client_fp or server_fp) and _fingerprints_listed(index, client_fp, server_fp))
        ):
            yield flow_id
    if scanned is not None:
        scanned.flows = count


def _names_listed(index: IndicatorIndex, *names: str) -> bool:
    return any(index.match_domain(name, None) is not None for name in names if name)


def _fingerprints_listed(index: IndicatorIndex, *fingerprints: str) -> bool:
    # most flows have none: skip the call
    return any(index.match_fingerprint(fp, None) is not None for fp in fingerprints if fp)
