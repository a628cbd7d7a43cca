"""The retro-hunt's prefilter: which archived flows touch a listed value at all, read from their keys alone.

A retro-hunt checks millions of archived flows against new indicators. Decoding each flow and asking the detector
costs tens of microseconds; reading its addresses and names (`FlowKeys`) and asking the index costs about one. So
the archive is scanned by keys, with each distinct address asked once, and only the flows that touch a listed
value are decoded and given to `IntelMatchDetector`, which decides (validity at the flow's time, direction,
repeats) exactly as it does live. The prefilter ignores validity, so it never drops a flow the detector would
report. Pure: no I/O.

Before that, `key_filter` describes what listed values look like coarsely (addresses, network prefixes, the last
two labels of names) for the store to drop, while it scans, the flows that cannot touch any of them: most of an
archive never reaches Python. That test only narrows what `touching` reads; `touching` decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vmshadow.intel.index import IndicatorIndex
from vmshadow.ports.store import FlowKeys, KeyFilter

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


def key_filter(index: IndicatorIndex) -> KeyFilter:
    """The coarse test (`KeyFilter`) every flow that `touching` keeps passes: listed hosts, the octet-aligned
    (IPv4) or group-aligned (IPv6) prefixes of listed networks, the last two labels of listed domains, and the
    listed fingerprints."""
    v4: tuple[set[str], set[str], set[str]] = (set(), set(), set())
    v6: tuple[set[str], set[str], set[str], set[str]] = (set(), set(), set(), set())
    any_v4 = any_v6 = False
    for network in index.listed_networks():
        if network.version == 4:
            octets = min(network.prefixlen // 8, 3)
            if octets == 0:  # wider than a /8: list the first octets it spans
                first, last = int(network.network_address) >> 24, int(network.broadcast_address) >> 24
                v4[0].update(f"{n}." for n in range(first, last + 1))
                continue
            v4[octets - 1].add(".".join(str(network.network_address).split(".")[:octets]) + ".")
        else:
            groups = min(network.prefixlen // 16, 4)
            if groups == 0:  # wider than a /16: every IPv6 address passes
                any_v6 = True
                continue
            written = network.network_address.exploded.split(":")[:groups]
            v6[groups - 1].add("".join(f"{int(g, 16):x}:" for g in written))
    if len(v4[0]) == 256:
        any_v4 = True
    return KeyFilter(
        hosts=frozenset(str(a) for a in index.listed_hosts()),
        v4_prefixes=(frozenset(v4[0]), frozenset(v4[1]), frozenset(v4[2])),
        v6_prefixes=(frozenset(v6[0]), frozenset(v6[1]), frozenset(v6[2]), frozenset(v6[3])),
        any_v4=any_v4,
        any_v6=any_v6,
        name_suffixes=frozenset(index.listed_name_suffixes()),
        fingerprints=frozenset(index.listed_fingerprints()),
    )


def _names_listed(index: IndicatorIndex, *names: str) -> bool:
    return any(index.match_domain(name, None) is not None for name in names if name)


def _fingerprints_listed(index: IndicatorIndex, *fingerprints: str) -> bool:
    # most flows have none: skip the call
    return any(index.match_fingerprint(fp, None) is not None for fp in fingerprints if fp)
