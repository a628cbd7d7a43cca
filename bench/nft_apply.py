"""How long putting a TMRSet in force takes with `NftEnforcer`, step by step, for 10, 1,000 and 10,000 TMRs.

Each size is applied `--repeat` times (median reported) in a throw-away network namespace holding one bridge
(nothing touches the root namespace), with an in-memory SQLite store. Four TMR mixes:

- ``networks``: every TMR is ``<one address> -> any, tcp/<port>``, allows and denies alternating: one map
  element per TMR, all in one layer (no two TMRs overlap);
- ``mixed``: a quarter each of address -> any (tcp, one port), VMN -> network (udp, a list of ports),
  group -> any (tcp, a range), any -> VMN (icmp); 200 VMNs known by address and MAC, 20 groups of 10 VMNs and a
  network. A VMN or group side becomes an element per identifier, a port list one per range; the group TMRs all
  overlap one another (a member's MAC with another member's address). Made by `i % n` cycles, the set repeats
  itself: 5,825 of its 10,000 TMRs have the match of an earlier one (`TMRSet.repeats`: 2,475 of the 2,500 group
  TMRs), which the compiler sets aside as shadowed;
- ``distinct``: ``mixed`` with no repeat: every group TMR has ports of its own (``8000 + i`` to ``8100 + i``, still
  all overlapping), every VMN TMR its own network, every ``any -> VMN`` TMR a UDP port of its own instead of ICMP: the
  worst case of the layering, thousands of layers;
- ``vmn``: bench/mirror_overhead.py's ``vmn10k``, one VMN (bridge port, MAC, address) denied a single address
  on one TCP port per TMR, then an allow: three set elements per TMR, no overlap (one layer).

Steps (seconds): ``compile`` (TMRSet -> JSON text), ``check`` (``nft -c -j -f``; off by default, so 0),
``commit`` (``nft -j -f``, the transaction), ``verify`` (the read-back and the comparison), ``record`` (the store),
``total`` (all, plus reading the bridge ports and the version in force). Also printed: the rules of the base
chain, the TMR maps (lookups a packet meets at most), layers and the TMRs compiled as rules (alone in their
layer). Target: the whole apply <= 1 s for 10,000 TMRs.

Run as root from the repository root:  .venv/bin/python -m bench.nft_apply [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import platform
import statistics
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from tests.integration import netlab

from vmshadow.adapters.sql import open_store
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.domain.vmn import VMN, Group
from vmshadow.enforcement.nft import NftEnforcer

SIZES = (10, 1_000, 10_000)
STEPS = ("compile", "check", "commit", "verify", "record", "total")
TARGET_S = 1.0


def networks(n: int) -> TMRSet:
    return TMRSet(
        tmrs=tuple(
            TMR(
                f"t{i}",
                i,
                Endpoint.network(f"198.18.{i // 256 % 256}.{i % 256}/32"),
                Endpoint.any(),
                Action.DENY if i % 2 else Action.ALLOW,
                protocol=Protocol.TCP,
                ports=(PortRange.single(1000 + i % 1000),),
            )
            for i in range(n)
        )
    )


def mixed(n: int) -> TMRSet:
    vmns = tuple(
        VMN(
            f"vm{i}",
            macs=(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",),
            addresses=(ipaddress.ip_address(f"198.19.{i // 256}.{i % 256}"),),
        )
        for i in range(200)
    )
    groups = tuple(
        Group(
            f"g{g}",
            vmns=tuple(f"vm{g * 10 + k}" for k in range(10)),
            networks=(ipaddress.ip_network(f"198.19.{100 + g}.0/24"),),
        )
        for g in range(20)
    )
    tmrs = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            src, dst = Endpoint.network(f"198.18.{i // 256 % 256}.{i % 256}/32"), Endpoint.any()
            protocol, ports = Protocol.TCP, (PortRange.single(1000 + i % 1000),)
        elif kind == 1:
            src, dst = Endpoint.vmn(f"vm{i % 200}"), Endpoint.network(f"198.18.{i % 256}.0/24")
            protocol, ports = Protocol.UDP, (PortRange.single(53), PortRange.single(123), PortRange(5000, 5100))
        elif kind == 2:
            src, dst = Endpoint.group(f"g{i % 20}"), Endpoint.any()
            protocol, ports = Protocol.TCP, (PortRange(8000 + i % 100, 8100 + i % 100),)
        else:
            src, dst = Endpoint.any(), Endpoint.vmn(f"vm{i % 200}")
            protocol, ports = Protocol.ICMP, ()
        tmrs.append(TMR(f"t{i}", i, src, dst, Action.DENY if i % 3 else Action.ALLOW, protocol=protocol, ports=ports))
    return TMRSet(tmrs=tuple(tmrs), vmns=vmns, groups=groups, vmn_defaults={"vm0": Action.DENY})


def distinct(n: int) -> TMRSet:
    """`mixed` without repeats (see the module doc)."""
    base = mixed(n)
    tmrs = []
    for t in base.tmrs:
        i = int(t.id[1:])
        if i % 4 == 1:
            t = replace(t, dst=Endpoint.network(f"198.{20 + i // 65536}.{i // 256 % 256}.{i % 256}/32"))
        elif i % 4 == 2:
            t = replace(t, ports=(PortRange(8000 + i, 8100 + i),))
        elif i % 4 == 3:
            t = replace(t, protocol=Protocol.UDP, ports=(PortRange.single(i),))
        tmrs.append(t)
    return replace(base, tmrs=tuple(tmrs))


def vmn(n: int) -> TMRSet:
    """bench/mirror_overhead.py's `vmn10k`: one VMN (a bridge port, a MAC, an address) denied n - 1 single
    addresses on one port each, then an allow: three set elements per TMR, all in one layer."""
    one = VMN(
        "vm1",
        macs=("02:00:c6:12:00:01",),
        addresses=(ipaddress.ip_address("198.18.0.1"),),
        interfaces=("vmsb-vm1",),
    )
    tmrs = [
        TMR(
            f"d{i}",
            i,
            Endpoint.vmn("vm1"),
            Endpoint.network(f"198.19.{i // 250}.{i % 250 + 1}/32"),
            Action.DENY,
            Protocol.TCP,
            (PortRange.single(10_000 + i // 2),),
        )
        for i in range(n - 1)
    ]
    last = TMR("last-allow", n, Endpoint.network("198.18.0.1"), Endpoint.network("198.18.0.2"), Action.ALLOW)
    return TMRSet(tmrs=(*tmrs, last), vmns=(one,))


MIXES = {"networks": networks, "mixed": mixed, "distinct": distinct, "vmn": vmn}


def measure(netns: str, bridge: str, tmrset: TMRSet, repeat: int) -> dict[str, Any]:
    runs: list[dict[str, float]] = []
    rules = maps = layers = rule_tmrs = shadowed = 0
    with open_store("sqlite://") as store:
        enforcer = NftEnforcer(store, bridges=[bridge], netns=netns)
        for _ in range(repeat):
            enforcer.apply(tmrset, datetime.now(UTC))
            assert enforcer.last_report is not None
            runs.append(enforcer.last_report.timings_s)
            rules = enforcer.last_report.rules
            maps, layers = enforcer.last_report.tmr_maps, enforcer.last_report.layers
            rule_tmrs = enforcer.last_report.rule_tmrs
            shadowed = len(enforcer.last_report.shadowed)
        enforcer.remove()
    median = {step: statistics.median(r.get(step, 0.0) for r in runs) for step in STEPS}
    median["compile_commit"] = median["compile"] + median["commit"]
    return {
        "tmrs": len(tmrset.tmrs),
        "rules": rules,
        "maps": maps,
        "layers": layers,
        "rule_tmrs": rule_tmrs,
        "shadowed": shadowed,
        "median_s": median,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    version = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    results: list[dict[str, Any]] = []
    with netlab.namespace("b") as netns:
        bridge = "vmsbr0"
        netlab.run("ip", "-n", netns, "link", "add", bridge, "type", "bridge")
        for mix, build in MIXES.items():
            for size in SIZES:
                results.append({"mix": mix, **measure(netns, bridge, build(size), args.repeat)})
    report = {
        "machine": {"python": platform.python_version(), "kernel": platform.release(), "nft": version},
        "repeat": args.repeat,
        "target_compile_commit_s": TARGET_S,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{version}, kernel {platform.release()}, median of {args.repeat}")
    header = f"{'mix':<9}{'TMRs':>7}{'shadow':>7}{'rules':>7}{'maps':>7}{'layers':>7}{'ruleTMRs':>9}"
    header += "".join(f"{s:>9}" for s in (*STEPS, "c+c"))
    print(header)
    for r in results:
        m = r["median_s"]
        cells = "".join(f"{m[s]:>9.3f}" for s in (*STEPS, "compile_commit"))
        counts = f"{r['tmrs']:>7}{r['shadowed']:>7}{r['rules']:>7}{r['maps']:>7}{r['layers']:>7}{r['rule_tmrs']:>9}"
        print(f"{r['mix']:<9}{counts}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
