"""CPU seconds of flow metering alone, split between nfstream's meter process and the process reading its flows.

Each run iterates `PcapSource` over the captures and prints the CPU of this process and of its children (the
meter) from getrusage. Meant for A/B comparisons of metering changes on a noisy machine: run it for one version,
then the other, alternating, and compare the columns (bench/analyze.py's medians mix in the detectors and the
machine's drift between its measurements).

Run from the repository root:  .venv/bin/python -m bench.meter_cpu [--runs N] [CAPTURE ...]
(default: the mixed captures of docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

from tests.datadir import shared_data

from vmshadow.flows.pcap import PcapSource

MIXED = (
    *(f"stopddos/{name}" for name in (
        "amp.TCP.reflection.SYNACK.pcap", "amp.TCP.syn.optionallyACK.optionallysamePort.pcapng",
        "pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng", "pkt.TCP.synflood.spoofed.pcap",
    )),
    *(f"esnet-scanners/{name}" for name in (
        "nmap_80_all.pcap", "nmap_80_vanilla.pcap", "nmap_80_w_service_detection.pcap", "tcp_0_1000_20190821.pcap",
        "udp_0_1000_20190821.pcap",
    )),
    "ndpi/pcap/synscan.pcap",
    "zeek/traces/ssh/sshguess.pcap",
)  # fmt: skip


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="*", type=Path, help="capture files (default: the mixed captures)")
    parser.add_argument("--runs", type=int, default=2, help="runs, each printed")
    args = parser.parse_args(argv)
    paths: list[Path] = args.captures or [shared_data() / name for name in MIXED]
    print(f"{'flows':>7} {'meter CPU s':>12} {'reader CPU s':>13} {'total':>7}")
    for _ in range(args.runs):
        own, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        flows = sum(1 for _ in PcapSource(paths))
        own, children = _cpu(resource.RUSAGE_SELF) - own, _cpu(resource.RUSAGE_CHILDREN) - children
        print(f"{flows:>7} {children:>12.2f} {own:>13.2f} {own + children:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
