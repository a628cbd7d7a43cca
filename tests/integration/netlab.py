"""Throw-away network labs for integration tests (root): a bridge in its own namespace and VMNs in theirs.

::

    with netlab.lab(vmns=3) as net:            # or the `lab` fixture pattern in test_nft_enforcer.py
        vm1, vm2 = net.vmn(1), net.vmn(2)
        assert vm1.connect(vm2.address, 7001)  # TCP, from inside vm1's namespace
        assert vm1.ping(vm2.address)           # ICMP echo
        assert vm1.udp(vm2.address, 7001)      # UDP echo

Layout: namespace ``<tag>h`` holds the bridge ``<tag>br``; VMN *i* is namespace ``<tag>v<i>`` whose interface
``<tag>e<i>`` (MAC 02:00:00:00:00:0<i>, address 198.18.0.<10+i>/24) is a veth peer of the bridge port ``<tag>p<i>``.
The tag is ``vmsT`` and four random hex digits, so every name starts with ``vms``, is unique per lab and fits
Linux's 15 characters. Nothing is created in the root namespace: the veth pairs are made inside the lab's
namespaces. IPv6 is switched off in every lab namespace (the lab's addresses are IPv4 from 198.18.0.0/15 only).

Each VMN runs a small agent (a Python process inside its namespace) that listens on TCP and UDP ports and probes on
request, so a probe costs its own timeout and no process start. Everything is torn down in a ``finally``: agents
are stopped and the namespaces deleted (which deletes their interfaces), also when the test fails.
"""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

SUBNET_PREFIX = "198.18.0."
PORTS = (7001, 7002)
_COMMAND_TIMEOUT_S = 10.0
_AGENT_LIFETIME_S = 300  # an agent outliving its test (a killed pytest) exits by itself

AGENT = r"""
import os, socket, struct, sys, threading, time

def watchdog():
    time.sleep(float(sys.argv[1]))
    os._exit(3)

def serve_tcp(port):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        conn.close()

def serve_udp(sock):
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF

def ping(address, timeout, seq):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        ident = os.getpid() & 0xFFFF
        body = b"vmshadow"
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        header = struct.pack("!BBHHH", 8, 0, checksum(header + body), ident, seq)
        sock.sendto(header + body, (address, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, source = sock.recvfrom(2048)
            except OSError:
                return False
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and rid == ident and rseq == seq and source[0] == address:
                return True
        return False
    finally:
        sock.close()

def connect(address, port, timeout):
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return True
    except OSError:
        return False

def udp(address, port, timeout, seq):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        payload = b"vmshadow %d" % seq
        sock.sendto(payload, (address, port))
        deadline = time.monotonic() + timeout
        while deadline - time.monotonic() > 0:
            data, _ = sock.recvfrom(2048)
            if data == payload:
                return True
        return False
    except OSError:
        return False
    finally:
        sock.close()

threading.Thread(target=watchdog, daemon=True).start()
for port in map(int, sys.argv[2:]):
    threading.Thread(target=serve_tcp, args=(port,), daemon=True).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    threading.Thread(target=serve_udp, args=(sock,), daemon=True).start()
time.sleep(0.05)
print("ready", flush=True)
seq = 0
for line in sys.stdin:
    seq += 1
    words = line.split()
    if words[0] == "ping":
        ok = ping(words[1], float(words[2]), seq & 0xFFFF)
    elif words[0] == "connect":
        ok = connect(words[1], int(words[2]), float(words[3]))
    elif words[0] == "udp":
        ok = udp(words[1], int(words[2]), float(words[3]), seq)
    else:
        ok = False
    print("ok" if ok else "fail", flush=True)
"""


class LabError(RuntimeError):
    """The lab could not be built or an agent stopped answering."""


def run(*command: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), input=stdin, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


def namespaces() -> set[str]:
    out = run("ip", "netns", "list").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class _Agent:
    def __init__(self, netns: str, ports: tuple[int, ...]) -> None:
        self.netns = netns
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-I", "-c", AGENT, str(_AGENT_LIFETIME_S), *map(str, ports)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        if self._line(_COMMAND_TIMEOUT_S) != "ready":
            raise LabError(f"agent in {netns} did not start: {self._stderr()}")

    def ask(self, request: str, timeout: float) -> bool:
        assert self.process.stdin is not None
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        answer = self._line(timeout + 5.0)
        if answer not in ("ok", "fail"):
            raise LabError(f"agent in {self.netns} answered {answer!r} to {request!r}: {self._stderr()}")
        return answer == "ok"

    def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise LabError(f"agent in {self.netns} did not answer within {timeout:g} s")
        return self.process.stdout.readline().strip()

    def _stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@dataclass
class LabVMN:
    """One VMN of a lab: its namespace, its port on the bridge, its guest-side interface, MAC and address."""

    index: int
    netns: str
    port: str
    ifname: str
    mac: str
    address: str
    agent: _Agent | None = field(default=None, repr=False)

    def _ask(self, request: str, timeout: float) -> bool:
        if self.agent is None:
            raise LabError(f"VMN {self.index} has no agent")
        return self.agent.ask(request, timeout)

    def ping(self, address: str, timeout: float = 0.5) -> bool:
        """One ICMP echo request; True when the echo reply came back within `timeout` seconds."""
        return self._ask(f"ping {address} {timeout}", timeout)

    def connect(self, address: str, port: int = PORTS[0], timeout: float = 0.5) -> bool:
        """A TCP connection (SYN, SYN-ACK, ACK) completed within `timeout` seconds."""
        return self._ask(f"connect {address} {port} {timeout}", timeout)

    def udp(self, address: str, port: int = PORTS[0], timeout: float = 0.5) -> bool:
        """A UDP datagram echoed back within `timeout` seconds."""
        return self._ask(f"udp {address} {port} {timeout}", timeout)


@dataclass
class Lab:
    tag: str
    host_ns: str
    bridge: str
    vmns: list[LabVMN]

    def vmn(self, index: int) -> LabVMN:
        return self.vmns[index - 1]

    @property
    def namespaces(self) -> list[str]:
        return [self.host_ns, *(v.netns for v in self.vmns)]

    def add_port(self, name: str) -> None:
        """Another port on the bridge: a veth pair inside the host namespace (for tests of port discovery)."""
        run("ip", "-n", self.host_ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}x")
        run("ip", "-n", self.host_ns, "link", "set", name, "master", self.bridge, "up")


def wait_until(condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> float | None:
    """Poll `condition()` until it is true or `timeout_s` passes; the seconds it took, or None on timeout."""
    started = time.monotonic()
    for _ in range(int(timeout_s / interval_s) + 2):  # bounded in count as well as in time
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout_s:
            return None
        time.sleep(interval_s)
    return None


def _new_tag() -> str:
    existing = namespaces()
    for _ in range(20):
        tag = f"vmsT{secrets.token_hex(2)}"
        if not any(name.startswith(tag) for name in existing):
            return tag
    raise LabError("no free lab tag after 20 tries")


@contextmanager
def namespace(suffix: str = "n") -> Iterator[str]:
    """One empty network namespace named ``vmsT<hex><suffix>``, deleted when the block ends."""
    if os.geteuid() != 0:
        raise LabError("network namespaces need root")
    name = f"{_new_tag()}{suffix}"
    run("ip", "netns", "add", name)
    try:
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


@contextmanager
def lab(vmns: int = 2, ports: tuple[int, ...] = PORTS) -> Iterator[Lab]:
    """Build a lab with `vmns` VMNs (at most 9) on one bridge; tear it down when the block ends, however it ends."""
    if os.geteuid() != 0:
        raise LabError("network labs need root")
    if not 1 <= vmns <= 9:
        raise ValueError("a lab has 1 to 9 VMNs")
    tag = _new_tag()
    net = Lab(tag=tag, host_ns=f"{tag}h", bridge=f"{tag}br", vmns=[])
    created: list[str] = []
    try:
        for i in range(1, vmns + 1):
            net.vmns.append(
                LabVMN(
                    index=i,
                    netns=f"{tag}v{i}",
                    port=f"{tag}p{i}",
                    ifname=f"{tag}e{i}",
                    mac=f"02:00:00:00:00:{i:02x}",
                    address=f"{SUBNET_PREFIX}{10 + i}",
                )
            )
        for ns in net.namespaces:
            run("ip", "netns", "add", ns)
            created.append(ns)
            for key in ("all", "default"):
                run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        h = net.host_ns
        run("ip", "-n", h, "link", "add", net.bridge, "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        run("ip", "-n", h, "link", "set", net.bridge, "up")
        for v in net.vmns:
            run("ip", "-n", h, "link", "add", v.port, "type", "veth", "peer", "name", v.ifname, "netns", v.netns)
            run("ip", "-n", h, "link", "set", v.port, "master", net.bridge, "up")
            run("ip", "-n", v.netns, "link", "set", v.ifname, "address", v.mac, "up")
            run("ip", "-n", v.netns, "addr", "add", f"{v.address}/24", "dev", v.ifname)
        for v in net.vmns:
            v.agent = _Agent(v.netns, ports)
        if len(net.vmns) > 1:
            first, second = net.vmns[0], net.vmns[1]
            if wait_until(lambda: first.ping(second.address, 0.3), timeout_s=5) is None:
                raise LabError(f"lab {tag}: VMN 1 cannot reach VMN 2 before any TMR")
        yield net
    finally:
        for v in net.vmns:
            if v.agent is not None:
                v.agent.stop()
        for ns in reversed(created):
            run("ip", "netns", "del", ns, check=False)
        left = sorted(n for n in namespaces() if n.startswith(tag))
        if left:
            raise LabError(f"lab {tag}: namespaces left behind: {left}")
