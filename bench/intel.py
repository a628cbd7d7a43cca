"""Threat intel at scale: ingest, lookups and retro-hunt, against the targets of issue 7.

All data is synthetic and seeded (`--seed`), in 198.18.0.0/15, the IPv4 documentation ranges, 2001:db8::/32 and
the reserved names of RFC 2606/6761 (example.*, .test, .invalid), plus the real lists and feeds in <data>/intel.

(1) ingest (target: parse + index + store of 1,000,000 indicators <= 30 s). Timed, each on its own:
    parse:  `load_plain_list` over the synthetic list files (IPv4/IPv6 hosts and networks, domains, URLs; JA3 in
            a file of its own, as JA3 lists need their type) and the real ipsum lists, `read_feed` over the real
            STIX bundles and MISP events (their valid part: they hold types the index does not take);
    index:  `IndicatorIndex(...)` over everything parsed;
    store:  `open_store` on a new SQLite file (migrations included) and `save_indicators` of everything.
    The list files are written before the clock starts.
(2) lookups per second on one core (target >= 500,000/s), each on 1,000,000 prepared queries against the index of
    (1), `hit_share` of them listed: flow destination (`match_ip` on the `IPv4Address`/`IPv6Address` a flow holds),
    DNS query and TLS SNI (`match_domain`; queries are deeper names than SNIs). CPU seconds are shown beside wall
    seconds; the loop is single-threaded, so lookups per CPU second are lookups per core.
(3) retro-hunt (target: 5,000,000 archived flows against 100,000 indicators <= 30 s). Timed: `app.intel.retro_hunt`
    on a SQLite archive holding the flows (all within its 24 h window), from opening the store to the findings and
    proposals stored. `hit_share` of the flows touch a listed value. The archive is built once per (flows, seed) under
    --work and reused; its build time is shown but not part of the measure.

Run from the repository root:  .venv/bin/python -m bench.intel [--indicators N] [--flows N] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import itertools
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from tests.datadir import shared_data

from bench.analyze import machine
from vmshadow.adapters.sql import open_store, tables
from vmshadow.adapters.sql.store import _flow_row as flow_row
from vmshadow.adapters.sql.store import make_engine
from vmshadow.app.intel import FeedFormat, read_feed, retro_hunt
from vmshadow.domain import codec
from vmshadow.domain.flow import TCP, UDP
from vmshadow.domain.indicator import Indicator, IndicatorType
from vmshadow.domain.net import IPAddress
from vmshadow.intel.index import IndicatorIndex
from vmshadow.intel.plain_list import load_plain_list

T = TypeVar("T")

TARGET_INGEST_S = 30.0
TARGET_LOOKUPS_PER_S = 500_000
TARGET_RETRO_HUNT_S = 30.0
NOW = datetime(2026, 1, 2, tzinfo=UTC)  # fixed, so archives and results do not depend on the day
WINDOW = timedelta(hours=24)
DEFAULT_WORK = Path(tempfile.gettempdir()) / "vmshadow-bench-intel"

# Listed values and background traffic are drawn from disjoint spaces, so `hit_share` is what decides the hits.
LISTED_V4 = ipaddress.IPv4Network("198.19.0.0/16")
LISTED_V4_NETS = ipaddress.ip_network("198.18.128.0/17")  # /24../30 networks
DOC_V4 = [ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
BACKGROUND_V4 = ipaddress.ip_network("198.18.1.0/24").network_address, 127 * 256  # 198.18.1.0 - 198.18.127.255
LISTED_V6_PREFIX = 0x20010DB8FF  # 2001:db8:ff00::/40 hosts and /48../64 networks
BACKGROUND_V6_PREFIX = 0x20010DB800  # 2001:db8::/40
LISTED_ZONES = ("example.com", "example.net", "example.org", "test", "invalid")
BACKGROUND_ZONE = "bench.example"
VMNS = 50  # VMN sources 198.18.0.10 ...
REAL_LISTS = ("ipsum",)
REAL_FEEDS = ("stix2-oasis", "misp-pymisp")

# share of the synthetic indicators per type
MIX = {
    IndicatorType.IPV4: 0.10,
    IndicatorType.CIDR: 0.05,
    IndicatorType.IPV6: 0.40,
    IndicatorType.DOMAIN: 0.40,
    IndicatorType.URL: 0.04,
    IndicatorType.JA3: 0.01,
}


@dataclass(frozen=True, slots=True)
class Timed:
    wall_s: float
    cpu_s: float


def timed(work: Callable[[], T]) -> tuple[T, Timed]:
    before, start = os.times(), time.perf_counter()
    result = work()
    wall, after = time.perf_counter() - start, os.times()
    return result, Timed(wall, (after.user - before.user) + (after.system - before.system))


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- synthetic indicators ---


def _v4(network: ipaddress.IPv4Network, offset: int) -> str:
    return str(network.network_address + offset)


def _v6(prefix40: int, bits88: int) -> str:
    return str(ipaddress.IPv6Address((prefix40 << 88) | bits88))


def synthetic_values(n: int, seed: int) -> dict[IndicatorType, list[str]]:
    """`n` distinct indicator values in the listed spaces, per type (MIX), deterministic for `seed`."""
    rng = random.Random(seed)
    counts = {kind: int(n * share) for kind, share in MIX.items()}
    counts[IndicatorType.DOMAIN] += n - sum(counts.values())
    room_v4 = LISTED_V4.num_addresses + sum(d.num_addresses for d in DOC_V4)
    if counts[IndicatorType.IPV4] > room_v4:
        counts[IndicatorType.IPV6] += counts[IndicatorType.IPV4] - room_v4
        counts[IndicatorType.IPV4] = room_v4
    spaces = [LISTED_V4, *DOC_V4]
    v4 = []
    for offset in rng.sample(range(room_v4), counts[IndicatorType.IPV4]):
        for space in spaces:
            if offset < space.num_addresses:
                v4.append(_v4(space, offset))
                break
            offset -= space.num_addresses
    nets: set[str] = set()
    while len(nets) < counts[IndicatorType.CIDR]:
        if rng.random() < 0.5:
            prefix = rng.randint(24, 30)
            base = int(LISTED_V4_NETS.network_address) + rng.randrange(LISTED_V4_NETS.num_addresses)
            nets.add(str(ipaddress.ip_network(f"{ipaddress.IPv4Address(base)}/{prefix}", strict=False)))
        else:
            prefix = rng.randint(48, 64)
            address = ipaddress.IPv6Address((LISTED_V6_PREFIX << 88) | rng.getrandbits(88))
            nets.add(str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)))
    v6 = {_v6(LISTED_V6_PREFIX, rng.getrandbits(88)) for _ in range(counts[IndicatorType.IPV6])}
    domains = [f"{_word(rng)}{i:x}.{rng.choice(LISTED_ZONES)}" for i in range(counts[IndicatorType.DOMAIN])]
    urls = [f"http://{_word(rng)}{i:x}.{rng.choice(LISTED_ZONES)}/p/{i}" for i in range(counts[IndicatorType.URL])]
    ja3 = [
        hashlib.md5(f"ja3-{seed}-{i}".encode(), usedforsecurity=False).hexdigest()
        for i in range(counts[IndicatorType.JA3])
    ]
    return {
        IndicatorType.IPV4: v4,
        IndicatorType.CIDR: sorted(nets),
        IndicatorType.IPV6: sorted(v6),
        IndicatorType.DOMAIN: domains,
        IndicatorType.URL: urls,
        IndicatorType.JA3: ja3,
    }


_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "xe", "zu", "be", "do", "fi")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def write_lists(values: dict[IndicatorType, list[str]], directory: Path) -> tuple[Path, Path]:
    """The synthetic values as a plain list (every type the list reader detects) and a JA3 list."""
    directory.mkdir(parents=True, exist_ok=True)
    main, ja3 = directory / "synthetic.txt", directory / "synthetic-ja3.txt"
    lines = [v for kind, vs in values.items() if kind is not IndicatorType.JA3 for v in vs]
    random.Random(0).shuffle(lines)  # feeds are not sorted by type
    main.write_text("# synthetic indicators for bench/intel.py\n" + "\n".join(lines) + "\n")
    ja3.write_text("\n".join(values[IndicatorType.JA3]) + "\n")
    return main, ja3


def parse_all(main: Path, ja3: Path, data: Path) -> tuple[list[Indicator], dict[str, int]]:
    """Everything (1) parses: the synthetic lists, the real ipsum lists, the valid part of the real feeds."""
    indicators = load_plain_list(main, source="bench")
    indicators += load_plain_list(ja3, source="bench-ja3", indicator_type=IndicatorType.JA3)
    real: Counter[str] = Counter()
    for name in REAL_LISTS:
        for path in sorted((data / "intel" / name).glob("*.txt")):
            found = load_plain_list(path, source=f"{name}/{path.name}")
            real[name] += len(found)
            indicators += found
    for name in REAL_FEEDS:
        for path in sorted((data / "intel" / name).glob("*.json")):
            found = read_feed(path, FeedFormat.AUTO, f"{name}/{path.name}").indicators  # the valid part (--partial)
            real[name] += len(found)
            indicators += found
    return indicators, dict(real)


# --- (2) lookups ---


def lookup_queries(
    values: dict[IndicatorType, list[str]], n: int, hit_share: float, seed: int
) -> tuple[list[IPAddress], list[str], list[str]]:
    """`n` flow destinations, DNS queries and SNIs; `hit_share` of each listed (or under a listed name/network)."""
    rng = random.Random(seed + 1)
    hosts = values[IndicatorType.IPV4] + values[IndicatorType.IPV6]
    nets = [ipaddress.ip_network(c) for c in values[IndicatorType.CIDR]]
    destinations: list[IPAddress] = []
    for _ in range(n):
        if rng.random() < hit_share:
            if rng.random() < 0.8:
                destinations.append(ipaddress.ip_address(rng.choice(hosts)))
            else:
                net = rng.choice(nets)
                destinations.append(net.network_address + rng.randrange(net.num_addresses))
        else:
            destinations.append(_background_ip(rng))
    domains = values[IndicatorType.DOMAIN]
    dns = [
        f"{_word(rng)}.{rng.choice(domains)}" if rng.random() < hit_share else _background_name(rng, deep=True)
        for _ in range(n)
    ]
    sni = [
        (rng.choice(domains) if rng.random() < 0.5 else f"www.{rng.choice(domains)}")
        if rng.random() < hit_share
        else _background_name(rng, deep=False)
        for _ in range(n)
    ]
    return destinations, dns, sni


def _background_ip(rng: random.Random) -> IPAddress:
    if rng.random() < 0.5:
        base, size = BACKGROUND_V4
        return base + rng.randrange(size)
    return ipaddress.IPv6Address((BACKGROUND_V6_PREFIX << 88) | rng.getrandbits(88))


def _background_name(rng: random.Random, *, deep: bool) -> str:
    name = f"{_word(rng)}{rng.randrange(1 << 20):x}.{BACKGROUND_ZONE}"
    return f"{_word(rng)}.{_word(rng)}.{name}" if deep else f"www.{name}"


def measure_lookups(queries: list[Any], match: Callable[[Any, datetime], object]) -> dict[str, Any]:
    at = NOW
    hits = 0

    def run() -> int:
        found = 0
        for q in queries:
            if match(q, at) is not None:
                found += 1
        return found

    hits, t = timed(run)
    return {
        "queries": len(queries),
        "hits": hits,
        "wall_s": round(t.wall_s, 3),
        "cpu_s": round(t.cpu_s, 3),
        "per_s": round(len(queries) / t.wall_s),
        "per_cpu_s": round(len(queries) / t.cpu_s) if t.cpu_s else None,
    }


# --- (3) retro-hunt ---


def hunt_indicators(n: int, seed: int) -> list[Indicator]:
    values = synthetic_values(n, seed + 2)
    return [Indicator(kind, value, "bench-hunt", confidence=80) for kind, vs in values.items() for value in vs]


def archive_rows(n: int, indicators: list[Indicator], hit_share: float, seed: int) -> Iterator[dict[str, Any]]:
    """`n` flows from the VMNs within WINDOW before NOW, as rows of the store's `flows` table (written directly:
    building `Flow` objects and encoding them costs ~100 us a flow, 8 minutes for 5 million; `check_rows` proves
    the rows decode to flows). `hit_share` of them touch a listed address or name."""
    rng = random.Random(seed + 3)
    rand, randrange = rng.random, rng.randrange
    hosts = [i.value for i in indicators if i.type in (IndicatorType.IPV4, IndicatorType.IPV6)]
    names = [i.value for i in indicators if i.type is IndicatorType.DOMAIN]
    start = (NOW - WINDOW).replace(tzinfo=None)
    step_s = (WINDOW.total_seconds() - 120) / n
    for i in range(n):
        vmn = randrange(VMNS)
        hit = rand() < hit_share
        kind = rand()
        sni = dns = ""
        if kind < 0.3:  # DNS to the lab resolver
            dst, protocol, port = "198.18.0.2", UDP, 53
            dns = f"{_word(rng)}.{rng.choice(names)}" if hit else _background_name(rng, deep=True)
        elif kind < 0.7:  # TLS
            protocol, port = TCP, 443
            if hit and rand() < 0.5:
                dst, sni = rng.choice(hosts), _background_name(rng, deep=False)
            else:
                dst = str(_background_ip(rng))
                sni = f"www.{rng.choice(names)}" if hit else _background_name(rng, deep=False)
        else:
            protocol, port = (TCP if rand() < 0.5 else UDP), randrange(1, 65536)
            dst = rng.choice(hosts) if hit else str(_background_ip(rng))
        src = f"2001:db8::{10 + vmn:x}" if ":" in dst else f"198.18.0.{10 + vmn}"
        # in time order, as flows reach an archive (the metering order), give or take a few seconds
        first = start + timedelta(seconds=max(0.0, i * step_s + rand() * 5 - 5))
        last = first + timedelta(seconds=rand() * 60)
        flow_id, cid = f"bench-{seed}-{i:08d}", f"1:bench{seed}{i:08d}="
        packets, answers = randrange(1, 21), randrange(0, 21)
        data = {
            "id": flow_id,
            "community_id": cid,
            "src_ip": src,
            "src_port": randrange(32768, 61000),
            "dst_ip": dst,
            "dst_port": port,
            "protocol": protocol,
            "first_seen_at": first.isoformat() + "+00:00",
            "last_seen_at": last.isoformat() + "+00:00",
            "src2dst_packets": packets,
            "src2dst_bytes": packets * 400,
            "dst2src_packets": answers,
            "dst2src_bytes": answers * 900,
            "src_mac": "",
            "dst_mac": "",
            "src_vmn": f"vm{vmn}",
            "dst_vmn": None,
            "syn_packets": 1 if protocol == TCP else 0,
            "rst_packets": 0,
            "psh_packets": 1 if answers else 0,
            "fin_packets": 0,
            "application": "TLS" if sni else ("DNS" if dns else ""),
            "category": "",
            "application_is_guessed": False,
            "sni": sni,
            "dns_query": dns,
            "http_host": "",
            "host_name": "",
            "user_agent": "",
            "client_fingerprint": "",
            "server_fingerprint": "",
            "source": "bench",
        }
        yield {
            "id": flow_id,
            "community_id": cid,
            "first_seen_at": first.replace(tzinfo=UTC),
            "last_seen_at": last.replace(tzinfo=UTC),
            "src_ip": src,
            "src_port": data["src_port"],
            "dst_ip": dst,
            "dst_port": port,
            "protocol": protocol,
            "src_vmn": data["src_vmn"],
            "dst_vmn": None,
            "data": data,
            "dns_query": dns,
            "sni": sni,
            "http_host": "",
            "client_fingerprint": "",
            "server_fingerprint": "",
        }


def check_rows(rows: list[dict[str, Any]]) -> None:
    """The rows are what the store itself writes: each decodes to a flow that encodes back to the same row."""
    for row in rows:
        flow = codec.flow_from_json(row["data"])
        if codec.flow_to_json(flow) != row["data"] or flow_row(flow) != row:
            raise AssertionError(f"bench archive row {row['id']} is not what the store writes for its flow")


def build_archive(path: Path, n: int, indicators: list[Indicator], hit_share: float, seed: int) -> float | None:
    """The archive at `path`, built unless a complete one is there; returns the build seconds (None: reused)."""
    marker = path.with_suffix(".done")
    if path.exists() and marker.exists() and marker.read_text() == f"{n} {hit_share} {seed}":
        return None
    for stale in (path, marker, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    url = f"sqlite:///{path}"
    open_store(url).close()  # migrated
    engine = make_engine(url)
    rows = archive_rows(n, indicators, hit_share, seed)
    try:
        done = 0
        while batch := list(itertools.islice(rows, 50_000)):
            if done == 0:
                check_rows(batch[:1000])
            with engine.begin() as conn:
                conn.execute(tables.flows.insert(), batch)
            done += len(batch)
            if done % 500_000 == 0:
                progress(f"archive: {done:,} of {n:,} flows stored ({done / (time.perf_counter() - start):,.0f}/s)")
    finally:
        engine.dispose()
    marker.write_text(f"{n} {hit_share} {seed}")
    return time.perf_counter() - start


# --- the run ---


def bench(args: argparse.Namespace) -> dict[str, Any]:
    data = shared_data()
    work: Path = args.work
    result: dict[str, Any] = {}

    progress(f"(1) generating {args.indicators:,} synthetic indicators (seed {args.seed}), untimed")
    values = synthetic_values(args.indicators, args.seed)
    main, ja3 = write_lists(values, work / "lists")
    progress("(1) parse")
    parsed, parse_t = timed(lambda: parse_all(main, ja3, data))
    indicators, real = parsed
    progress(f"(1) index {len(indicators):,}")
    index, index_t = timed(lambda: IndicatorIndex(indicators))
    db = work / "ingest.sqlite"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)

    def store_all() -> int:
        with open_store(f"sqlite:///{db}") as store:
            return store.save_indicators(indicators, at=NOW)

    progress("(1) store")
    stored, store_t = timed(store_all)
    total = parse_t.wall_s + index_t.wall_s + store_t.wall_s
    result["ingest"] = {
        "synthetic": sum(len(v) for v in values.values()),
        "real": real,
        "parsed": len(indicators),
        "indexed": len(index),
        "stored": stored,
        "by_type": dict(Counter(str(i.type) for i in indicators)),
        "parse": _t(parse_t),
        "index": _t(index_t),
        "store": _t(store_t),
        "total_s": round(total, 3),
        "target_s": TARGET_INGEST_S,
        "per_s": round(len(indicators) / total),
    }

    progress(f"(2) lookups: {args.lookups:,} queries each, hit share {args.hit_share}")
    destinations, dns, sni = lookup_queries(values, args.lookups, args.hit_share, args.seed)
    result["lookups"] = {
        "flow_destination": measure_lookups(destinations, index.match_ip),
        "dns_query": measure_lookups(dns, index.match_domain),
        "sni": measure_lookups(sni, index.match_domain),
        "target_per_s": TARGET_LOOKUPS_PER_S,
        "hit_share": args.hit_share,
    }

    if args.flows:
        progress(f"(3) retro-hunt: {args.hunt_indicators:,} indicators, {args.flows:,} archived flows")
        hunt = hunt_indicators(args.hunt_indicators, args.seed)
        archive = work / f"archive-{args.flows}-{args.seed}.sqlite"
        built = build_archive(archive, args.flows, hunt, args.hunt_hit_share, args.seed)
        progress("(3) hunting")
        report, hunt_t = timed(lambda: retro_hunt(f"sqlite:///{archive}", hunt, now=NOW, window=WINDOW))
        result["retro_hunt"] = {
            "indicators": len(hunt),
            "flows_checked": report.flows_checked,
            "flows_matched": report.flows_matched,
            "findings": len(report.findings),
            "proposals": len(report.proposals),
            "hit_share": args.hunt_hit_share,
            "archive": str(archive),
            "archive_build_s": None if built is None else round(built, 1),
            **_t(hunt_t),
            "target_s": TARGET_RETRO_HUNT_S,
            "flows_per_s": round(report.flows_checked / hunt_t.wall_s) if hunt_t.wall_s else None,
            "phases_s": report.seconds,
        }
    result["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _t(t: Timed) -> dict[str, float]:
    return {"wall_s": round(t.wall_s, 3), "cpu_s": round(t.cpu_s, 3)}


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    load = "/".join(f"{x:.2f}" for x in m["loadavg"])
    print(f"{result['date']}  {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, load average {load} at start")
    print(f"seed {result['seed']}")
    i = result["ingest"]
    print()
    print(f"(1) ingest: {i['parsed']:,} indicators ({i['synthetic']:,} synthetic + real {i['real']})")
    print(f"    by type: {i['by_type']}")
    for phase in ("parse", "index", "store"):
        p = i[phase]
        print(
            f"    {phase:<6} {p['wall_s']:>8.2f} s wall {p['cpu_s']:>8.2f} s cpu  {i['parsed'] / p['wall_s']:>12,.0f}/s"
        )
    ok = i["total_s"] <= i["target_s"]
    verdict = f"{_verdict(ok)} the target <= {i['target_s']:.0f} s"
    print(f"    parse + index + store: {i['total_s']:.2f} s, {i['per_s']:,}/s ({verdict})")
    lk = result["lookups"]
    print()
    print(f"(2) lookups on one core, {lk['hit_share']:.0%} of queries listed")
    for name in ("flow_destination", "dns_query", "sni"):
        r = lk[name]
        ok = r["per_s"] >= lk["target_per_s"]
        print(
            f"    {name:<17} {r['per_s']:>12,}/s  ({r['per_cpu_s'] or 0:,}/cpu s, "
            f"{r['hits']:,} hits of {r['queries']:,})"
            f"  {_verdict(ok)} >= {lk['target_per_s']:,}/s"
        )
    if "retro_hunt" in result:
        h = result["retro_hunt"]
        print()
        built = "reused" if h["archive_build_s"] is None else f"built in {h['archive_build_s']} s"
        print(f"(3) retro-hunt: {h['flows_checked']:,} archived flows ({built}) against {h['indicators']:,} indicators")
        ok = h["wall_s"] <= h["target_s"]
        print(
            f"    {h['wall_s']:.2f} s wall, {h['cpu_s']:.2f} s cpu, {h['flows_per_s'] or 0:,} flows/s; "
            f"{h['flows_matched']:,} flows decoded, {h['findings']:,} findings, {h['proposals']:,} proposals "
            f"({_verdict(ok)} the target <= {h['target_s']:.0f} s)"
        )
        print(f"    phases (s): {h['phases_s']}")
    print()
    print(f"process ru_maxrss: {result['max_rss_mib']:,} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--indicators", type=int, default=1_000_000, help="synthetic indicators for (1) and (2)")
    parser.add_argument("--lookups", type=int, default=1_000_000, help="queries per lookup kind in (2)")
    parser.add_argument("--hit-share", type=float, default=0.1, help="share of lookup queries that are listed")
    parser.add_argument("--flows", type=int, default=5_000_000, help="archived flows in (3); 0 skips (3)")
    parser.add_argument("--hunt-indicators", type=int, default=100_000, help="indicators hunted with in (3)")
    parser.add_argument("--hunt-hit-share", type=float, default=0.001, help="share of archived flows that match")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="lists, ingest store and reusable archives")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    if args.indicators < 1 or args.lookups < 1 or args.flows < 0 or args.hunt_indicators < 1:
        parser.error("counts must be positive (--flows may be 0)")
    if not 0 <= args.hit_share <= 1 or not 0 <= args.hunt_hit_share <= 1:
        parser.error("hit shares are between 0 and 1")
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seed": args.seed,
        "command": "python -m bench.intel " + " ".join(argv if argv is not None else sys.argv[1:]),
        **bench(args),
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
