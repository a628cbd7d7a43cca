"""What vmshadow costs live traffic between two lab VMNs, measured with iperf3 in one run against an in-run baseline.

Part 1, the shadow ports and the SAE. TCP throughput (iperf3's default TCP test, vm1 -> vm2) and the small-packet
rate (UDP, 64-byte payloads, unlimited rate: packets/s the server received, and the loss) under these configurations:

(a) ``no_mirror``      vm1's and vm2's mirrors and budgets detached, shadow ports kept (no tc hook): the baseline;
(b) ``mirror``         shadow ports attached, nothing reading them (the kernel copies and drops);
(b') ``mirror_cls_bpf`` (b) with the copy budget as a ``cls_bpf`` filter, as on kernels without tcx (before 6.6);
(c) ``sae``            a `LiveSource` metering both shadow ports, a consumer thread draining ``.flows()``;
(d) ``sae_saturated``  a `LiveSource` with a queue of 1 flow that nobody drains: the meters still read every packet
                       (as fast as they can) but shed every flow after the first; its queue drops (flows) are
                       reported with the socket drops (packets the meters' sockets could not take);
(e) ``sae_idle``       (c) with the SAE demoted further than vmshadow does today: SCHED_IDLE for its processes and
                       nice 19 for this session's autogroup (see below), to show what idle priority would buy.

Every shadow port is attached with the copy budget ``--budget PPS[/BURST]`` (default: vmshadow's `DEFAULT_BUDGET`;
``none``: every packet copied): copies over it are shed in the kernel (capture/budget.py). Each run reports the
packets copied (tc mirred, GSO segments) and shed (the budget's counter, packets as tc saw them). ``--configs``
picks part-1 configurations (``no_mirror`` first).

iperf3's client and server each run in a session of their own, as VMs are processes of their own: with autogroups
(``/proc/sys/kernel/sched_autogroup_enabled``), the CPU is shared equally between sessions whatever the nice values,
so the meters' nice 10 only ranks them against this benchmark process. (e) lowers the weight of the benchmark's own
autogroup (``/proc/self/autogroup``, restored afterwards); in a service, cgroup ``cpu.weight`` / ``cpu.idle`` do that.

Every round runs each configuration once (the order rotates from round to round), so a change in the machine's
load hits all of them alike; the median over the rounds is reported, with its ratio to (a) and the spread of the
per-round ratios (each configuration against (a) of the same round). Target: >= 0.97 with the SAE running. With a
LiveSource, the CPU its processes used during the tests is reported in cores (CPU seconds per second), and the
source runs until its flows have expired (idle timeout) so that they are counted, drained or shed.

Part 1b, paired (``--pairs N``, default 10): the SAE against no mirror in alternating tests, for a finer answer
than part 1's rounds. One `LiveSource` meters both shadow ports throughout; the tc hooks are detached
(``no_mirror``: the meters stay open but get no copies, only their heartbeats) and attached again (``sae``) between
tests, the order alternating from pair to pair, so the two arms of a pair run seconds apart and the machine's drift
(TCP baselines move by 20 % within minutes here) cancels out of their ratio. Reported: per test the median of the
per-pair ratios (the target's answer, >= 0.97) with its range, and the ratio of the medians. A pair during which
other jobs used more than 0.15 cores is kept in the JSON and left out.

Part 2, the TMR count. The same tests with 10 TMRs and with 10,000 TMRs put in force by `NftEnforcer` on the lab
bridge (shadow ports attached, nothing reading), and with no vmshadow table at all (``no_table``: the fixed cost of
enforcement). No TMR but the last matches the test traffic, and the last one is an allow that matches, so every
packet vm1 sends walks the whole chain (vm2's answers are accepted early, by the table's reply sets). The 10 TMRs
are 9 ``deep`` denies and the allow; the three mixes of 10,000 are 9,999 denies and the allow:

``shallow``  deny <another 198.19 address> -> any, tcp|udp/<port>: one rule per TMR, which a packet from vm1 leaves
             at its first test (the source address): the cheapest way to miss a rule (a list of bad sources);
``deep``     deny <vm1's address> -> <vm2's address> tcp|udp/<port other than iperf's>: one rule per TMR, which a
             packet leaves only at its last test (protocol or port): the most expensive way to miss a rule;
``vmn``      deny VMN vm1 -> <another 198.19 address> tcp/<port>: three set elements per TMR (vm1's bridge port, MAC
             and address), the most the compiler makes for one TMR.

Reported: ratio 10,000/10 (target >= 0.9) and the apply time of 10,000 TMRs from the enforcer's ``last_report``
(target <= 1 s; the whole apply, with compile + commit beside it). The packet counters of the rules are read after
each test: the final allow must have counted the traffic and no deny anything. The table name is global to the
root namespace: the part is skipped if a vmshadow table exists already, and a run is excluded if the table was
replaced meanwhile (by another process).

Every test also records the machine-wide CPU use (/proc/stat: busy, softirq and steal, in cores); the table shows
the busy cores. ``--pin`` pins iperf3's client and server to CPUs 0 and 1 (``-A``); by default they float.

Other jobs on a shared machine: every test also records the CPU that processes outside this benchmark used
(``foreign``: not its descendants, not kernel threads). A part-1 run during which they used more than 0.15 cores is
kept in the JSON, marked ``excluded`` and left out of the summary; ``--quiet-wait S`` waits up to S seconds for a
quiet second before each run, and ``--retries N`` runs an excluded one again (at most N times). The summary gives
the ratio of medians and the median of the per-round ratios.

Lab: a tagged lab of its own (``Lab(tag="b<3 hex>")`` on bridge ``vmsB<4 hex>``; tags are at most 4 characters),
taken down at the end, with the nft table removed, even on error, Ctrl-C or SIGTERM. Needs root, iperf3 and nft.

Defaults: 3 rounds of part 1, 10 pairs of part 1b, 1 round of part 2 (its differences are far above the noise),
iperf3 -t 3: about 7 minutes in all; after 280 s (``--max-seconds``) no round starts but a part's first.

Run as root from the repository root:
    .venv/bin/python -m bench.mirror_overhead [--rounds N] [--tmr-rounds N] [--duration S] [--both-directions]
        [--pin] [--budget PPS[/BURST]|none] [--configs A,B,..] [--pairs N] [--max-seconds S] [--quiet-wait S]
        [--retries N] [--skip-mirror] [--skip-tmrs] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vmshadow.adapters.sql import open_store
from vmshadow.capture import DEFAULT_BUDGET, CopyBudget, shadow_port
from vmshadow.domain.errors import InputError
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.enforcement.nft import NftEnforcer
from vmshadow.enforcement.nft_compiler import ALLOWED_CHAIN, PORTS_SET
from vmshadow.flows.live import IDLE_TIMEOUT_S, LiveSource, MeteredPort
from vmshadow.lab.state import LabHost, LabState
from vmshadow.lab.topology import Lab

CONFIGS = ("no_mirror", "mirror", "mirror_cls_bpf", "sae", "sae_saturated", "sae_idle")
SAE_CONFIGS = ("sae", "sae_saturated", "sae_idle")
TESTS = ("tcp", "udp64")
PAIR_ARMS = ("no_mirror", "sae")
TMR_SETS = ("no_table", "tmrs10", "shallow10k", "deep10k", "vmn10k")
IPERF_PORT = 5201
CLIENT_CPU, SERVER_CPU = 0, 1  # with --pin: iperf3 -A
UDP_PAYLOAD = 64
TARGET_SAE = 0.97
TARGET_TMRS = 0.9
TARGET_APPLY_S = 1.0
READY_TIMEOUT_S = 30.0
SETTLE_S = 0.5
SATURATED_QUEUE = 1
AUTOGROUP = Path("/proc/self/autogroup")
MAX_TOTAL_S = 280.0  # default --max-seconds: no new round starts after this (the finished rounds are reported)
FOREIGN_MAX_CORES = 0.15  # a run during which other jobs used more CPU than this is reported but not summarised


class TerminatedError(Exception):
    """SIGTERM: unwind through the finally blocks like Ctrl-C."""


@dataclass
class Bench:
    lab: Lab
    state: LabState
    client: LabHost
    server: LabHost
    duration: int
    both_directions: bool
    pin: bool = False
    budget: CopyBudget | None = DEFAULT_BUDGET
    configs: tuple[str, ...] = CONFIGS
    max_seconds: float = MAX_TOTAL_S
    quiet_wait_s: float = 0.0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    errors: list[str] = field(default_factory=list)
    mirror_runs: list[dict[str, Any]] = field(default_factory=list)
    pair_runs: list[dict[str, Any]] = field(default_factory=list)
    tmr_runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def server_ip(self) -> str:
        return str(self.server.address.ip)

    def over_time(self) -> bool:
        return time.monotonic() - self.started > self.max_seconds


# --- iperf3 ---------------------------------------------------------------------------------------------------


def iperf(bench: Bench, test: str) -> dict[str, Any]:
    """One iperf3 client run from vm1 to vm2; what it measured (or an error). Retried once."""
    argv = ["iperf3", "-c", bench.server_ip, "-p", str(IPERF_PORT), "-t", str(bench.duration), "--json"]
    if bench.pin:
        argv += ["-A", str(CLIENT_CPU)]
    if test == "udp64":
        argv += ["-u", "-l", str(UDP_PAYLOAD), "-b", "0"]
    error = ""
    for _ in range(2):
        cpu_before, wall_before, procs_before = _cpu_ticks(), time.monotonic(), _processes()
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", bench.client.namespace, *argv],
                capture_output=True,
                text=True,
                timeout=bench.duration + 20,
                check=False,
                start_new_session=True,  # like a VM: a process of its own, not in this session's autogroup
            )
            report = json.loads(done.stdout or "{}")
        except (subprocess.TimeoutExpired, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = report.get("error", "") or ("" if done.returncode == 0 else f"exit {done.returncode}")
            if not error:
                result = _tcp_result(report) if test == "tcp" else _udp_result(report)
                wall = time.monotonic() - wall_before
                result["cpu_cores"] = _cpu_cores(cpu_before, _cpu_ticks(), wall)
                result["cpu_cores"]["foreign"] = round(foreign_cpu_s(procs_before, _processes()) / wall, 3)
                return result
        time.sleep(1.0)
    bench.errors.append(f"iperf3 {test}: {error}")
    return {"error": error}


_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def foreign_cpu_s(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """CPU seconds that processes outside this benchmark (not its descendants, not kernel threads) used between two
    snapshots: other jobs on the machine. Processes that started and ended in between are not seen."""
    ours = descendant_pids(after) | IPERF_SERVER | {os.getpid()}
    ticks = sum(
        cpu - before.get(pid, (0, 0))[1]
        for pid, (parent, cpu) in after.items()
        if pid not in ours and parent != 2 and pid != 2  # kthreadd's children: softirq, workers (the data path)
    )
    return ticks / os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> list[int]:
    """The machine's CPU time so far (/proc/stat, all CPUs), in ticks per `_CPU_FIELDS`."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    return [int(x) for x in first[1 : 1 + len(_CPU_FIELDS)]]


def _cpu_cores(before: list[int], after: list[int], wall_s: float) -> dict[str, float]:
    """Machine-wide CPU use over a test in cores (CPU seconds per second): busy (all but idle and iowait), the
    softirq part of it (where bridging, tc mirror and packet sockets run), and steal (taken by the hypervisor)."""
    tick = os.sysconf("SC_CLK_TCK")
    d = {name: (a - b) / tick / wall_s for name, a, b in zip(_CPU_FIELDS, after, before, strict=True)}
    busy = sum(v for k, v in d.items() if k not in ("idle", "iowait", "steal"))
    return {"busy": round(busy, 3), "softirq": round(d["softirq"], 3), "steal": round(d["steal"], 3)}


def _tcp_result(report: dict[str, Any]) -> dict[str, Any]:
    received = report["end"]["sum_received"]
    sent = report["end"]["sum_sent"]
    return {
        "value": received["bits_per_second"],
        "unit": "bit/s",
        "retransmits": sent.get("retransmits"),
        "seconds": received["seconds"],
    }


def _udp_result(report: dict[str, Any]) -> dict[str, Any]:
    total = report["end"]["sum"]  # packets: sent by the client; lost_packets: as the server counted them
    seconds = total["seconds"]
    received = total["packets"] - total["lost_packets"]
    return {
        "value": received / seconds if seconds else 0.0,
        "unit": "packet/s",
        "sent_pps": total["packets"] / seconds if seconds else 0.0,
        "loss_percent": total["lost_percent"],
        "seconds": seconds,
    }


@contextlib.contextmanager
def iperf_server(bench: Bench) -> Iterator[None]:
    """iperf3 -s in vm2's namespace for the whole bench, stopped by its process id."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", bench.server.namespace, "iperf3", "-s", "-B", bench.server_ip, "-p", str(IPERF_PORT)]
        + (["-A", str(SERVER_CPU)] if bench.pin else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    IPERF_SERVER.add(proc.pid)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _listening(bench):
            if proc.poll() is not None:
                raise RuntimeError(f"iperf3 -s exited with {proc.returncode}")
            time.sleep(0.1)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _listening(bench: Bench) -> bool:
    done = subprocess.run(
        ["ip", "netns", "exec", bench.server.namespace, "ss", "-ltnH", f"sport = :{IPERF_PORT}"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return bool(done.stdout.strip())


# --- shadow ports and the SAE ---------------------------------------------------------------------------------


def vmn_hosts(bench: Bench) -> tuple[LabHost, LabHost]:
    return bench.client, bench.server


def set_mirror(bench: Bench, on: bool, *, budget_on_tcx: bool = True) -> list[shadow_port.ShadowPort]:
    ports = []
    for host in vmn_hosts(bench):
        if on:
            previous, shadow_port.BUDGET_ON_TCX = shadow_port.BUDGET_ON_TCX, budget_on_tcx
            try:
                ports.append(
                    shadow_port.attach(
                        host.name, host.host_interface, both_directions=bench.both_directions, budget=bench.budget
                    )
                )
            finally:
                shadow_port.BUDGET_ON_TCX = previous
        else:
            assert host.shadow_interface is not None
            # only the tc hooks go: deleting and re-creating the shadow port's veth pair between configurations
            # slowed the next test by a few % whatever the configuration (measured), which is not the mirror's cost
            shadow_port.detach(host.shadow_interface, keep_interface=True)
    return ports


def shed_packets(ports: list[shadow_port.ShadowPort]) -> int:
    """Copies the ports' copy budgets shed so far (packets as tc saw them: a GSO super-packet is one)."""
    return sum(shadow_port.shed_counters(p).packets for p in ports)


def mirrored_packets(ports: list[shadow_port.ShadowPort]) -> int:
    """tc mirred packets (GSO segments) copied into these shadow ports so far."""
    return sum(c.packets for p in ports for c in shadow_port.mirror_counters(p).values())


def packet_sockets_on(interfaces: list[str]) -> int:
    """Packet sockets bound to these interfaces (from /proc/net/packet): the readers of the shadow ports."""
    indexes = set()
    for name in interfaces:
        with contextlib.suppress(OSError):
            indexes.add(int(Path(f"/sys/class/net/{name}/ifindex").read_text()))
    lines = Path("/proc/net/packet").read_text().splitlines()[1:]
    return sum(1 for line in lines if len(line.split()) > 4 and int(line.split()[4]) in indexes)


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user + system CPU ticks) for every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            out[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return out


IPERF_SERVER: set[int] = set()  # the iperf3 server's pid: a child of this process, but not part of the SAE


def descendant_pids(processes: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """This process's living descendants but the iperf3 server: while a LiveSource runs and no iperf3 client
    does, its meters and nfstream's capture processes (and multiprocessing's resource tracker)."""
    processes = _processes() if processes is None else processes
    mine: set[int] = set()
    frontier = {os.getpid()}
    for _ in range(10):  # bounded depth: meter -> capture process is 2
        frontier = {pid for pid, (parent, _) in processes.items() if parent in frontier} - mine - IPERF_SERVER
        if not frontier:
            break
        mine |= frontier
    return mine


def descendant_cpu_s() -> float:
    """User + system CPU seconds of this process's living descendants (see `descendant_pids`)."""
    processes = _processes()
    return sum(processes[pid][1] for pid in descendant_pids(processes)) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sae:
    """A LiveSource on both shadow ports, with or without a consumer."""

    source: LiveSource
    drain: bool
    consumed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _autogroup_nice: str | None = None

    def start(self, readers: list[str]) -> None:
        self.source.start()
        if self.drain:
            self._thread = threading.Thread(target=self._consume, name="consumer", daemon=True)
            self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while packet_sockets_on(readers) < len(readers):  # bounded: READY_TIMEOUT_S
            errors = [h.error for h in self.source.health.values() if h.error]
            if errors or time.monotonic() > deadline:
                raise RuntimeError(f"the meters did not open the shadow ports: {errors or 'timeout'}")
            time.sleep(0.1)
        time.sleep(SETTLE_S)

    def demote(self) -> int:
        """Idle CPU priority for the SAE, beyond the meters' nice 10: SCHED_IDLE for every process the source
        started, and nice 19 for this session's autogroup (with autogroups, nice only ranks processes of one
        session against each other; groups share the CPU equally). Undone by `stop`. The processes demoted."""
        pids = descendant_pids()
        for pid in pids:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        with contextlib.suppress(OSError):
            self._autogroup_nice = AUTOGROUP.read_text().split()[-1]
            AUTOGROUP.write_text("19")
        return len(pids)

    def stop(self) -> dict[str, Any]:
        if self._autogroup_nice is not None:
            with contextlib.suppress(OSError):
                AUTOGROUP.write_text(self._autogroup_nice)
        self.source.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        health = list(self.source.health.values())
        return {
            "processed": sum(h.processed for h in health),
            "socket_dropped": sum(h.socket_dropped for h in health),
            "queue_dropped": sum(h.queue_dropped for h in health),
            "flows": sum(h.flows for h in health),
            "consumed": self.consumed,
            "errors": [h.error for h in health if h.error],
        }

    def _consume(self) -> None:
        while not self._stop.is_set():
            for _ in self.source.flows(timeout=0.5):
                self.consumed += 1
                if self._stop.is_set():
                    break


def run_config(bench: Bench, config: str) -> dict[str, Any]:
    """Both tests under one configuration; the LiveSource (if any) lives for both."""
    ports = set_mirror(bench, config != "no_mirror", budget_on_tcx=config != "mirror_cls_bpf")
    time.sleep(SETTLE_S)  # the kernel's work for the change (static keys, RCU) is done before the tests
    readers = [p.reader_interface for p in ports]
    sae = None
    if config in SAE_CONFIGS:
        saturated = config == "sae_saturated"
        sae = sae_on(bench, ports, queue_size=SATURATED_QUEUE if saturated else 10_000, drain=not saturated)
    out: dict[str, Any] = {}
    try:
        if sae is not None:
            sae.start(readers)
            if config == "sae_idle":
                out["demoted"] = sae.demote()
        out["readers"] = packet_sockets_on(readers)
        before, shed_before = mirrored_packets(ports), shed_packets(ports)
        cpu_before, wall_before = descendant_cpu_s(), time.monotonic()
        for test in TESTS:
            out[test] = iperf(bench, test)
            time.sleep(SETTLE_S)
        if sae is not None:
            out["sae_cores"] = (descendant_cpu_s() - cpu_before) / (time.monotonic() - wall_before)
        out["mirrored_packets"] = mirrored_packets(ports) - before
        out["shed_packets"] = shed_packets(ports) - shed_before
        if sae is not None:
            let_flows_expire(bench)
    finally:
        if sae is not None:
            out["sae"] = sae.stop()
    return out


def sae_on(bench: Bench, ports: list[shadow_port.ShadowPort], *, queue_size: int = 10_000, drain: bool = True) -> Sae:
    """A (not yet started) SAE metering `ports`."""
    metered = [MeteredPort(p.vmn, p.reader_interface, p.shadow_interface) for p in ports]
    return Sae(LiveSource(metered, bench.state.vmn_map(), queue_size=queue_size), drain=drain)


def let_flows_expire(bench: Bench) -> None:
    """Let the tests' flows expire, so they are counted (and drained or shed); then one ping makes a fresh flow on
    both ports, whose expiry is where each meter notices the stop flag (else stopping waits 5 s)."""
    time.sleep(IDLE_TIMEOUT_S + 1.5)
    ping(bench)


def ping(bench: Bench) -> None:
    subprocess.run(
        ["ip", "netns", "exec", bench.client.namespace, "ping", "-c", "1", "-W", "1", bench.server_ip],
        capture_output=True,
        timeout=5,
        check=False,
    )


def wait_for_quiet(max_wait_s: float) -> float:
    """Wait (at most `max_wait_s`) until other jobs use at most FOREIGN_MAX_CORES over one second; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < max_wait_s:  # bounded in time
        before = _processes()
        time.sleep(1.0)
        if foreign_cpu_s(before, _processes()) <= FOREIGN_MAX_CORES:
            break
    return round(time.monotonic() - started, 1)


def part_mirror(bench: Bench, rounds: int) -> None:
    runs = bench.mirror_runs
    for r in range(rounds):
        if r > 0 and bench.over_time():  # the first round of a part always runs
            bench.errors.append(f"mirror part: stopped after {r} rounds (time limit {bench.max_seconds:g} s)")
            break
        configs = bench.configs
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for config in order:
            for attempt in range(1 + bench.retries):  # bounded: a noisy run is tried again, at most `retries` times
                waited = wait_for_quiet(bench.quiet_wait_s)
                runs.append({"round": r, "config": config, "waited_s": waited, **run_config(bench, config)})
                foreign = max(runs[-1][t].get("cpu_cores", {}).get("foreign", 0.0) for t in TESTS)
                _progress(f"round {r + 1} {config}: {_brief(runs[-1])}, other jobs {foreign:.2f} cores")
                if foreign <= FOREIGN_MAX_CORES:
                    break
                runs[-1]["excluded"] = True
                bench.errors.append(
                    f"round {r + 1} {config} (try {attempt + 1}): other jobs used {foreign:.2f} cores; not summarised"
                )
    set_mirror(bench, True)  # as the lab had it


def part_paired(bench: Bench, pairs: int) -> None:
    """Part 1b: `pairs` pairs of tests, no mirror and SAE, with one LiveSource metering throughout."""
    ports = set_mirror(bench, True)
    sae = sae_on(bench, ports)
    sae.start([p.reader_interface for p in ports])
    try:
        for i in range(pairs):  # bounded: `pairs` (<= 40), each iperf3 run by its timeout
            wait_for_quiet(bench.quiet_wait_s)
            pair: dict[str, Any] = {"pair": i}
            for mirror_on in (False, True) if i % 2 == 0 else (True, False):
                set_mirror(bench, mirror_on)
                time.sleep(SETTLE_S)
                tests = {}
                for test in TESTS:
                    tests[test] = iperf(bench, test)
                    time.sleep(SETTLE_S)
                pair["sae" if mirror_on else "no_mirror"] = tests
            foreign = max(t.get("cpu_cores", {}).get("foreign", 0.0) for arm in PAIR_ARMS for t in pair[arm].values())
            if foreign > FOREIGN_MAX_CORES:
                pair["excluded"] = True
                bench.errors.append(f"pair {i + 1}: other jobs used {foreign:.2f} cores; not summarised")
            bench.pair_runs.append(pair)
            _progress(f"pair {i + 1}: " + ", ".join(f"{t} {_fmt_ratio(pair_ratio(pair, t))}" for t in TESTS))
        let_flows_expire(bench)
    finally:
        stats = sae.stop()
        set_mirror(bench, True)  # as the lab had it
    bench.pair_runs.append({"sae": stats})


def pair_ratio(pair: dict[str, Any], test: str) -> float | None:
    """The SAE arm's value over the no-mirror arm's for `test`; None if either test failed."""
    base, sae = (pair[arm][test].get("value") for arm in PAIR_ARMS)
    return sae / base if sae and base else None


def summarize_pairs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = [x for x in runs if "pair" in x and not x.get("excluded")]
    out: dict[str, Any] = {"pairs": len(pairs), "sae": next((x["sae"] for x in runs if "pair" not in x), None)}
    for test in TESTS:
        measured = [x for x in pairs if pair_ratio(x, test) is not None]
        both = [(x["sae"][test]["value"], x["no_mirror"][test]["value"]) for x in measured]
        ratios = [a / b for a, b in both]
        out[test] = {
            "pair_ratios": ratios,
            "median_pair_ratio": statistics.median(ratios) if ratios else None,
            "ratio_of_medians": statistics.median(a for a, _ in both) / statistics.median(b for _, b in both)
            if both
            else None,
        }
    return out


# --- TMRs -----------------------------------------------------------------------------------------------------


def tmrset(bench: Bench, kind: str, n: int) -> TMRSet:
    src, dst = str(bench.client.address.ip), bench.server_ip
    tmrs = []
    for i in range(n - 1):
        port = PortRange.single(10_000 + i // 2)
        other = Endpoint.network(f"198.19.{i // 250}.{i % 250 + 1}/32")
        if kind == "vmn":
            tmrs.append(TMR(f"d{i}", i, Endpoint.vmn(bench.client.name), other, Action.DENY, Protocol.TCP, (port,)))
        elif kind == "shallow":
            protocol = Protocol.TCP if i % 2 == 0 else Protocol.UDP
            tmrs.append(TMR(f"d{i}", i, other, Endpoint.any(), Action.DENY, protocol, (port,)))
        else:
            protocol = Protocol.TCP if i % 2 == 0 else Protocol.UDP
            tmrs.append(TMR(f"d{i}", i, Endpoint.network(src), Endpoint.network(dst), Action.DENY, protocol, (port,)))
    tmrs.append(TMR("last-allow", n, Endpoint.network(src), Endpoint.network(dst), Action.ALLOW))
    return TMRSet(tmrs=tuple(tmrs), vmns=(bench.client.vmn(),) if kind == "vmn" else ())


def part_tmrs(bench: Bench, enforcer: NftEnforcer, rounds: int) -> None:
    sets = {  # no_table: no vmshadow table at all
        "tmrs10": tmrset(bench, "deep", 10),
        "shallow10k": tmrset(bench, "shallow", 10_000),
        "deep10k": tmrset(bench, "deep", 10_000),
        "vmn10k": tmrset(bench, "vmn", 10_000),
    }
    set_mirror(bench, True)
    runs = bench.tmr_runs
    for r in range(rounds):
        if r > 0 and bench.over_time():  # the first round of a part always runs
            bench.errors.append(f"TMR part: stopped after {r} rounds (time limit {bench.max_seconds:g} s)")
            break
        order = TMR_SETS[r % len(TMR_SETS) :] + TMR_SETS[: r % len(TMR_SETS)]
        for name in order:
            if name == "no_table":
                remove_if_ours(bench, enforcer)
                run = {"round": r, "config": name, **{test: iperf(bench, test) for test in TESTS}}
                if enforcer.listing(ALLOWED_CHAIN) is not None:
                    run["excluded"] = True
                    bench.errors.append(f"TMRs {name} round {r}: a vmshadow table appeared meanwhile; run excluded")
                runs.append(run)
                _progress(f"round {r + 1} {name}: {_brief(run)}")
                continue
            enforcer.apply(sets[name], datetime.now(UTC), comment=f"bench {name}")
            report = enforcer.last_report
            assert report is not None
            run: dict[str, Any] = {
                "round": r,
                "config": name,
                "tmrs": report.tmrs,
                "rules": report.rules,
                "apply_s": report.timings_s,
            }
            for test in TESTS:
                run[test] = iperf(bench, test)
                time.sleep(SETTLE_S)
            if not table_is_ours(bench, enforcer, report.version):
                run["excluded"] = True
                bench.errors.append(f"TMRs {name} round {r}: the nft table was replaced meanwhile; run excluded")
            counters = enforcer.counters()
            run["allow_packets"] = counters.get("last-allow", 0)
            run["deny_packets"] = sum(v for k, v in counters.items() if k != "last-allow")
            if run["allow_packets"] == 0 or run["deny_packets"]:
                bench.errors.append(f"TMRs {name} round {r}: counters {run['allow_packets']} / {run['deny_packets']}")
            runs.append(run)
            _progress(f"round {r + 1} {name}: {_brief(run)}, apply {report.timings_s.get('total', 0):.3f} s")


def summarize_tmrs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarize(runs, TMR_SETS, "tmrs10")
    for name in TMR_SETS[1:]:
        mine = [x for x in runs if x["config"] == name and not x.get("excluded")]
        if mine:
            summary[name]["rules"] = mine[0]["rules"]
            summary[name]["apply_s"] = {
                step: statistics.median(x["apply_s"].get(step, 0.0) for x in mine)
                for step in ("compile", "check", "commit", "verify", "record", "total")
            }
            summary[name]["allow_packets"] = [x["allow_packets"] for x in mine]
            summary[name]["deny_packets"] = sum(x["deny_packets"] for x in mine)
    return summary


@contextlib.contextmanager
def enforcer_for(bench: Bench, workdir: Path) -> Iterator[NftEnforcer | None]:
    """An enforcer on the lab bridge with a throw-away store; None (and a note) if a vmshadow table is already
    there: the table name is global to the namespace, and someone else's must not be replaced."""
    with open_store(f"sqlite:///{workdir / 'tmrs.db'}") as store:
        enforcer = NftEnforcer(store, bridges=[bench.state.bridge])
        if enforcer.listing(ALLOWED_CHAIN) is not None:
            bench.errors.append("TMR part skipped: a vmshadow nft table already exists in the root namespace")
            yield None
            return
        try:
            yield enforcer
        finally:
            remove_if_ours(bench, enforcer)


def table_is_ours(bench: Bench, enforcer: NftEnforcer, version: int | None = None) -> bool:
    """Whether the root namespace's vmshadow table is still the one this bench applied: it manages exactly this
    lab's bridge ports (and carries `version`). The table name is global, so another process applying or removing
    one meanwhile (an integration test, a `vmshadow run`) would replace ours."""
    done = subprocess.run(
        ["nft", "-j", "list", "set", "bridge", "vmshadow", PORTS_SET],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        return False
    found = [x["set"] for x in json.loads(done.stdout)["nftables"] if "set" in x]
    elements = set(found[0].get("elem", [])) if found else set()
    ports = {h.host_interface for h in bench.state.hosts}
    return elements == ports and (version is None or enforcer.current_version() == version)


def remove_if_ours(bench: Bench, enforcer: NftEnforcer) -> None:
    try:
        if enforcer.listing(ALLOWED_CHAIN) is None:
            return
        if table_is_ours(bench, enforcer):
            enforcer.remove()
        else:
            bench.errors.append("the vmshadow nft table now manages other ports (not ours): left in place")
    except Exception as exc:
        bench.errors.append(f"could not remove the nft table: {type(exc).__name__}: {exc}")


# --- summaries ------------------------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], configs: tuple[str, ...], baseline: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = [x for x in runs if not x.get("excluded")]
    base_by_round = {x["round"]: x for x in runs if x["config"] == baseline}
    for config in configs:
        mine = [x for x in runs if x["config"] == config]
        entry: dict[str, Any] = {"rounds": len(mine)}
        for test in TESTS:
            values = [x[test]["value"] for x in mine if "value" in x[test]]
            base = [x[test]["value"] for x in base_by_round.values() if "value" in x[test]]
            per_round = [
                x[test]["value"] / base_by_round[x["round"]][test]["value"]
                for x in mine
                if "value" in x[test] and "value" in base_by_round.get(x["round"], {}).get(test, {})
            ]
            entry[test] = {
                "values": values,
                "median": statistics.median(values) if values else None,
                "ratio": statistics.median(values) / statistics.median(base) if values and base else None,
                "round_ratios": per_round,
                "paired_ratio": statistics.median(per_round) if per_round else None,
            }
            entry[test]["cpu_cores"] = [x[test].get("cpu_cores") for x in mine]
            if test == "udp64":
                entry[test]["loss_percent"] = [x[test].get("loss_percent") for x in mine]
                entry[test]["sent_pps"] = [x[test].get("sent_pps") for x in mine]
            else:
                entry[test]["retransmits"] = [x[test].get("retransmits") for x in mine]
        if any("mirrored_packets" in x for x in mine):
            entry["mirrored_packets"] = [x.get("mirrored_packets") for x in mine]
            entry["shed_packets"] = [x.get("shed_packets") for x in mine]
            entry["readers"] = [x.get("readers") for x in mine]
        saes = [x["sae"] for x in mine if "sae" in x]
        if saes:
            entry["sae"] = {k: sum(s[k] for s in saes) for k in ("processed", "socket_dropped", "queue_dropped")}
            entry["sae"].update(flows=sum(s["flows"] for s in saes), consumed=sum(s["consumed"] for s in saes))
            entry["sae"]["errors"] = [e for s in saes for e in s["errors"]]
            entry["sae"]["cores"] = [x.get("sae_cores") for x in mine]
        out[config] = entry
    return out


def _brief(run: dict[str, Any]) -> str:
    tcp, udp = run["tcp"], run["udp64"]
    text = f"tcp {tcp.get('value', 0) / 1e9:.2f} Gbit/s, udp64 {udp.get('value', 0) / 1e3:.0f} kpps"
    if "loss_percent" in udp:
        text += f" ({udp['loss_percent']:.1f} % lost)"
    return text


_quiet = False


def _progress(text: str) -> None:
    if not _quiet:
        print(text, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (done.stdout or done.stderr).splitlines()[0].strip() if (done.stdout or done.stderr) else "?"

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "iperf3": version(["iperf3", "--version"]),
        "nft": version(["nft", "--version"]),
    }


def background_cpu(seconds: float = 2.0) -> dict[str, float]:
    """What the machine is busy with before the benchmark starts (other jobs), in cores."""
    before, start = _cpu_ticks(), time.monotonic()
    time.sleep(seconds)
    return _cpu_cores(before, _cpu_ticks(), time.monotonic() - start)


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# --- output ---------------------------------------------------------------------------------------------------


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _busy(entry: dict[str, Any]) -> str:
    """Median machine-wide busy cores during the test."""
    busy = [c["busy"] for c in entry.get("cpu_cores", []) if c]
    return f"{statistics.median(busy):.2f}" if busy else "-"


def _spread(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    s = report["settings"]
    print(f"{m['nproc']} x {m['cpu_model']}, kernel {m['kernel']}, {m['iperf3']}, {m['nft']}")
    print(
        f"{s['rounds']} rounds ({s['tmr_rounds']} for TMRs) x iperf3 -t {s['duration_s']}, median; mirror "
        f"{'both directions' if s['both_directions'] else 'outgoing only'}; copy budget "
        f"{'none' if not s['budget'] else str(s['budget']['pps']) + '/s burst ' + str(s['budget']['burst'])} per port; "
        f"load avg {report['loadavg_start']}, "
        f"busy before start {report['background_cpu_cores']['busy']:.2f} cores"
    )
    for part, title in (("mirror", "shadow ports and SAE"), ("tmrs", "TMR count")):
        if part not in report:
            continue
        print(f"\n{title}")
        print(
            f"{'config':<15}{'TCP Gbit/s':>11}{'ratio':>7}{'spread':>11}"
            f"{'UDP64 kpps':>12}{'ratio':>7}{'spread':>11}{'loss %':>8}{'CPU tcp/udp':>13}  extra"
        )
        for name, e in report[part]["summary"].items():
            tcp, udp = e["tcp"], e["udp64"]
            losses = [x for x in udp.get("loss_percent", []) if x is not None]
            extra = ""
            if "sae" in e:
                d = e["sae"]
                cores = [c for c in d["cores"] if c is not None]
                extra = (
                    f"meters: {statistics.median(cores) if cores else 0:.2f} cores, read {d['processed']:,} pkts, "
                    f"socket drops {d['socket_dropped']:,}, flows {d['flows']} (consumed {d['consumed']}, "
                    f"queue drops {d['queue_dropped']})"
                )
            if "shed_packets" in e and part == "mirror":
                shed = sum(x or 0 for x in e["shed_packets"])
                copied = sum(x or 0 for x in e["mirrored_packets"])
                extra = f"copied {copied:,}, shed {shed:,}" + (f"; {extra}" if extra else "")
            if "apply_s" in e:
                a = e["apply_s"]
                extra = (
                    f"{e['rules']:,} rules, apply {a['total']:.3f} s (compile+commit {a['compile'] + a['commit']:.3f})"
                )
            print(
                f"{name:<15}{(tcp['median'] or 0) / 1e9:>11.2f}{_fmt_ratio(tcp['ratio']):>7}"
                f"{_spread(tcp['round_ratios']):>11}{(udp['median'] or 0) / 1e3:>12.1f}"
                f"{_fmt_ratio(udp['ratio']):>7}{_spread(udp['round_ratios']):>11}"
                f"{statistics.median(losses) if losses else 0:>8.1f}{_busy(tcp) + '/' + _busy(udp):>13}  {extra}"
            )
    if "paired" in report:
        p = report["paired"]["summary"]
        print(f"\nSAE against no mirror, {p['pairs']} pairs (per-pair ratio: median, range; ratio of medians)")
        for test in TESTS:
            e = p[test]
            print(
                f"{test:<8}{_fmt_ratio(e['median_pair_ratio']):>7}{_spread(e['pair_ratios']):>11}"
                f"{_fmt_ratio(e['ratio_of_medians']):>7}"
            )
    for line in report["verdicts"]:
        print(line)
    for error in report["errors"]:
        print(f"note: {error}")


def verdicts(report: dict[str, Any]) -> list[str]:
    out = []
    mirror = report.get("mirror", {}).get("summary", {})
    for config in SAE_CONFIGS:
        for test in TESTS:
            ratio = mirror.get(config, {}).get(test, {}).get("ratio")
            paired = mirror.get(config, {}).get(test, {}).get("paired_ratio")
            if ratio is not None:
                verdict = "met" if ratio >= TARGET_SAE else "MISSED"
                out.append(
                    f"{config} {test}: {ratio:.3f} of no-mirror (target >= {TARGET_SAE}: {verdict}); median of the "
                    f"per-round ratios {_fmt_ratio(paired)}"
                )
    paired = report.get("paired", {}).get("summary", {})
    for test in TESTS:
        ratio = paired.get(test, {}).get("median_pair_ratio")
        if ratio is not None:
            verdict = "met" if ratio >= TARGET_SAE else "MISSED"
            out.append(
                f"sae {test}, {paired['pairs']} pairs: {ratio:.3f} of no-mirror, median of the per-pair ratios "
                f"(target >= {TARGET_SAE}: {verdict}); ratio of the medians "
                f"{_fmt_ratio(paired[test]['ratio_of_medians'])}"
            )
    tmrs = report.get("tmrs", {}).get("summary", {})
    for test in TESTS:
        ten, none = (tmrs.get(n, {}).get(test, {}).get("median") for n in ("tmrs10", "no_table"))
        if ten and none:
            out.append(f"tmrs10 {test}: {ten / none:.3f} of no vmshadow table (no target)")
    for name in TMR_SETS[2:]:
        e = tmrs.get(name)
        if not e:
            continue
        for test in TESTS:
            ratio = e[test]["ratio"]
            if ratio is not None:
                verdict = "met" if ratio >= TARGET_TMRS else "MISSED"
                out.append(f"{name} {test}: {ratio:.3f} of 10 TMRs (target >= {TARGET_TMRS}: {verdict})")
        if "apply_s" in e:
            a = e["apply_s"]
            total, core = a["total"], a["compile"] + a["commit"]
            verdict = "met" if total <= TARGET_APPLY_S else "MISSED"
            out.append(
                f"{name} apply: {total:.3f} s in all, {core:.3f} s compile + commit "
                f"(target <= {TARGET_APPLY_S:g} s in all: {verdict})"
            )
    return out


# --- main -----------------------------------------------------------------------------------------------------


_MAIN_PID = os.getpid()


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:  # a forked helper (pyroute2 forks to create a namespace, then kills the child)
        os._exit(128 + signum)
    raise TerminatedError("SIGTERM")


def _cleanup(step: str, action: Callable[[], Any], errors: list[str]) -> None:
    try:
        action()
    except Exception as exc:
        errors.append(f"cleanup {step}: {type(exc).__name__}: {exc}")


def _configs(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in names if x not in CONFIGS]
    if unknown or not names or names[0] != "no_mirror":
        raise argparse.ArgumentTypeError(f"--configs {text!r}: no_mirror first, then any of {', '.join(CONFIGS)}")
    return names


def _budget(text: str) -> CopyBudget | None:
    """PPS[/BURST] (burst defaults to a tenth of a second's budget) or 'none'."""
    if text == "none":
        return None
    pps, _, burst = text.partition("/")
    try:
        return CopyBudget(int(pps), int(burst) if burst else max(1, int(pps) // 10))
    except (ValueError, InputError) as exc:
        raise argparse.ArgumentTypeError(f"--budget {text!r}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    global _quiet, _MAIN_PID
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every configuration (default 3)")
    parser.add_argument("--tmr-rounds", type=int, default=1, help="rounds of the TMR part (default 1)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per iperf3 run (default 3)")
    parser.add_argument("--both-directions", action="store_true", help="mirror what the VMNs receive too")
    parser.add_argument(
        "--pin", action="store_true", help=f"pin iperf3's client to CPU {CLIENT_CPU}, server to {SERVER_CPU}"
    )
    parser.add_argument(
        "--budget",
        type=_budget,
        default=DEFAULT_BUDGET,
        help=f"copies/s per shadow port, PPS[/BURST] or none (default {DEFAULT_BUDGET.pps}/{DEFAULT_BUDGET.burst})",
    )
    parser.add_argument(
        "--configs",
        type=_configs,
        default=CONFIGS,
        help=f"comma-separated part-1 configurations, no_mirror first (default {','.join(CONFIGS)})",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=MAX_TOTAL_S,
        help=f"start no round but a part's first after this (default {MAX_TOTAL_S:g})",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help=f"before each part-1 run, wait up to this many seconds for other jobs to use <= {FOREIGN_MAX_CORES} cores",
    )
    parser.add_argument(
        "--retries", type=int, default=0, help="run a part-1 configuration again (up to N times) if others were busy"
    )
    parser.add_argument("--pairs", type=int, default=10, help="pairs of part 1b (0 skips it; at most 40)")
    parser.add_argument("--skip-mirror", action="store_true", help="only the TMR part")
    parser.add_argument("--skip-tmrs", action="store_true", help="only the mirror part")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 10 or not 1 <= args.tmr_rounds <= 10 or not 1 <= args.duration <= 30:
        parser.error("--rounds and --tmr-rounds 1..10, --duration 1..30")
    if not 0 <= args.pairs <= 40:
        parser.error("--pairs 0..40")
    if not 0 <= args.retries <= 5 or not 0 <= args.quiet_wait <= 600 or not 10 <= args.max_seconds <= 3600:
        parser.error("--retries 0..5, --quiet-wait 0..600, --max-seconds 10..3600")
    _quiet = args.json
    if os.geteuid() != 0:
        print("needs root (network namespaces, tc, nft)", file=sys.stderr)
        return 2
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)
    suffix = secrets.token_hex(2)
    lab = Lab(tag=f"b{suffix[:3]}")
    bridge = f"vmsB{suffix}"
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": _loadavg(),
        "background_cpu_cores": background_cpu(),
    }
    errors: list[str] = []
    bench = None
    try:
        state = lab.up(2, bridge, both_directions=args.both_directions)
        client, server = state.vmns
        bench = Bench(
            lab,
            state,
            client,
            server,
            args.duration,
            args.both_directions,
            args.pin,
            args.budget,
            configs=args.configs,
            max_seconds=args.max_seconds,
            quiet_wait_s=args.quiet_wait,
            retries=args.retries,
            errors=errors,
        )
        set_mirror(bench, True)  # the lab attached with the default budget
        report["settings"] = {
            "rounds": args.rounds,
            "pairs": args.pairs if not args.skip_mirror else 0,
            "tmr_rounds": args.tmr_rounds,
            "duration_s": args.duration,
            "both_directions": args.both_directions,
            "budget": {"pps": args.budget.pps, "burst": args.budget.burst} if args.budget else None,
            "configs": list(args.configs),
            "quiet_wait_s": args.quiet_wait,
            "retries": args.retries,
            "foreign_max_cores": FOREIGN_MAX_CORES,
            "pinned": {"client_cpu": CLIENT_CPU, "server_cpu": SERVER_CPU} if args.pin else None,
            "udp_payload_bytes": UDP_PAYLOAD,
            "lab_tag": lab.tag,
            "bridge": bridge,
            "client": f"{client.name} {client.address.ip}",
            "server": f"{server.name} {server.address.ip}",
        }
        with iperf_server(bench), tempfile.TemporaryDirectory(prefix="vmshadow-bench-") as workdir:
            if not args.skip_mirror:
                part_mirror(bench, args.rounds)
                if args.pairs:
                    part_paired(bench, args.pairs)
            if not args.skip_tmrs:
                with enforcer_for(bench, Path(workdir)) as enforcer:
                    if enforcer is not None:
                        part_tmrs(bench, enforcer, args.tmr_rounds)
    except (KeyboardInterrupt, TerminatedError) as exc:
        errors.append(f"interrupted ({type(exc).__name__}); partial results")
    except Exception as exc:
        errors.append(f"failed: {type(exc).__name__}: {exc}; partial results")
        traceback.print_exc()
    finally:
        if os.getpid() != _MAIN_PID:  # never clean up (or report) from a forked helper: the lab is the parent's
            os._exit(1)
        _cleanup("lab down", lambda: lab.down(bridge), errors)
    if bench is not None:
        report["elapsed_s"] = round(time.monotonic() - bench.started, 1)
        if bench.mirror_runs:
            report["mirror"] = {
                "summary": summarize(bench.mirror_runs, bench.configs, "no_mirror"),
                "runs": bench.mirror_runs,
            }
        if bench.pair_runs:
            report["paired"] = {"summary": summarize_pairs(bench.pair_runs), "runs": bench.pair_runs}
        if bench.tmr_runs:
            report["tmrs"] = {"summary": summarize_tmrs(bench.tmr_runs), "runs": bench.tmr_runs}
    report["loadavg_end"] = _loadavg()
    report["verdicts"] = verdicts(report)
    report["errors"] = errors
    if args.json:
        print(json.dumps(report, indent=2))
    elif "settings" in report:
        print_table(report)
    else:
        print("\n".join(f"note: {e}" for e in errors))
    return 0 if bench is not None and not any(e.startswith(("failed", "interrupted")) for e in errors) else 1


if __name__ == "__main__":
    sys.exit(main())
