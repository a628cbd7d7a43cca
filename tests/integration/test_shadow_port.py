"""Shadow ports in the kernel (root): copies of what a VMN sends, once each, before any TMR; counters; restart.

Traffic is bounded bursts of UDP datagrams between the lab's own namespaces, each burst to a port no other test
uses, counted on the shadow port with a packet socket and at the peer with a UDP socket. Each lab has its own tag
and bridge (``vmsT<hex>``); finalizers remove it, and the nftables table, even when a test fails.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from tests.integration import labkit
from vmshadow.capture import (
    DEFAULT_BUDGET,
    CopyBudget,
    Direction,
    ShadowPort,
    attach,
    detach,
    find_attached,
    mirror_counters,
    shadow_port,
    shed_counters,
)
from vmshadow.capture import budget as copy_budget
from vmshadow.capture.shadow_port import shadow_interface_name
from vmshadow.domain.errors import InputError
from vmshadow.lab import LabHost, LabState, open_socket

ETH_P_ALL = 0x0003
BURST = 20
QUIET_S = 0.3  # a shadow port or peer quiet this long after the expected count has nothing more to show
DEADLINE_S = 3.0
SO_RCVBUFFORCE = 33  # root may exceed net.core.rmem_max
AFTER_S = 1.0  # once the sender's shadow port has shown the burst, the rest of the path has long delivered it


def unique_names() -> tuple[str, str]:
    return labkit.unique_names("t")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    with labkit.tagged_lab(tmp_path_factory.mktemp("lab"), letter="t") as state:
        yield state


@pytest.fixture
def port_number() -> int:
    return 20000 + secrets.randbelow(40000)


def shadow_of(host: LabHost) -> ShadowPort:
    (port,) = [p for p in find_attached() if p.vmn == host.name]
    return port


class ShadowReader:
    """A packet socket on a shadow port counting UDP datagrams to one port (bounded in count and time)."""

    def __init__(self, interface: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((interface, 0))

    def count_udp(self, dport: int, expected: int, *, deadline_s: float = DEADLINE_S) -> int:
        seen = 0
        deadline = time.monotonic() + deadline_s
        quiet_until = None
        for _ in range(100 * BURST):
            now = time.monotonic()
            until = min(deadline, quiet_until) if quiet_until else deadline
            if now >= until:
                break
            self.sock.settimeout(until - now)
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                break
            if is_udp_to(frame, dport):
                seen += 1
                if seen >= expected and quiet_until is None:
                    quiet_until = time.monotonic() + QUIET_S
        return seen

    def close(self) -> None:
        self.sock.close()


def is_udp_to(frame: bytes, dport: int) -> bool:
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
        return False
    ihl = (frame[14] & 0x0F) * 4
    return bool(struct.unpack("!H", frame[14 + ihl + 2 : 14 + ihl + 4])[0] == dport)


class Peer:
    """A UDP socket in a lab namespace, bound to the host's address and a port."""

    def __init__(self, host: LabHost, port: int) -> None:
        self.sock = open_socket(host.namespace, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((str(host.address.ip), port))

    def count(self, expected: int, *, deadline_s: float = DEADLINE_S) -> int:
        seen = 0
        deadline = time.monotonic() + deadline_s
        for _ in range(10 * BURST):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(min(remaining, QUIET_S) if seen >= expected else remaining)
            try:
                self.sock.recv(2048)
            except TimeoutError:
                break
            seen += 1
        return seen

    def close(self) -> None:
        self.sock.close()


def send_burst(source: LabHost, target: LabHost, port: int, count: int = BURST) -> None:
    # bounded: `count` datagrams, sent as fast as the socket takes them
    with open_socket(source.namespace, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            sock.sendto(b"vmshadow %d" % i, (str(target.address.ip), port))


def burst_seen(lab: LabState, port: int, *, readers: tuple[LabHost, ...] | None = None) -> tuple[dict[str, int], int]:
    """Send a burst vm1 -> vm2; (copies per shadow port of `readers`, datagrams the peer received).

    vm1's shadow port (the sender's) is read first when it is among the readers; everything else is then given
    a short deadline, since the copy is taken before the bridge delivers the original.
    """
    vm1, vm2 = lab.vmns
    readers = readers if readers is not None else (vm1,)
    shadows = {h.name: ShadowReader(shadow_interface_name(h.name)) for h in readers}
    peer = Peer(vm2, port)
    try:
        send_burst(vm1, vm2, port)
        copies = {}
        if vm1.name in shadows:
            copies[vm1.name] = shadows[vm1.name].count_udp(port, BURST)
        for name, reader in shadows.items():
            if name not in copies:
                copies[name] = reader.count_udp(port, BURST, deadline_s=AFTER_S)
        received = peer.count(BURST, deadline_s=AFTER_S if vm1.name in shadows else DEADLINE_S)
        return copies, received
    finally:
        peer.close()
        for r in shadows.values():
            r.close()


def test_traffic_sent_by_a_vmn_appears_once_on_its_shadow_port(lab: LabState, port_number: int) -> None:
    vm1, vm2 = lab.vmns
    copies, received = burst_seen(lab, port_number, readers=(vm1, vm2))
    assert received == BURST  # exactly once: the copy is never put back on the live path
    assert copies == {vm1.name: BURST, vm2.name: 0}  # vm2's port copies what vm2 sends, not what it receives
    port = shadow_of(vm1)
    assert port.host_interface == vm1.host_interface
    assert port.directions == (Direction.OUTGOING,)


def test_attaching_again_does_not_duplicate_the_copy(lab: LabState, port_number: int) -> None:
    vm1, _ = lab.vmns
    first = attach(vm1.name, vm1.host_interface)
    second = attach(vm1.name, vm1.host_interface)
    assert first == second
    assert [p.vmn for p in find_attached()].count(vm1.name) == 1
    copies, received = burst_seen(lab, port_number)
    assert (copies[vm1.name], received) == (BURST, BURST)
    assert tc_filter_count(vm1.host_interface, "ingress") == 1


def tc_filters(interface: str, hook: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["tc", "-j", "filter", "show", "dev", interface, hook], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return list(json.loads(out))


def tc_filter_count(interface: str, hook: str) -> int:
    """Mirror filters (u32 key nodes with actions) on a hook."""
    return sum(1 for f in tc_filters(interface, hook) if f.get("options", {}).get("actions"))  # type: ignore[attr-defined]


def budget_names(interface: str, hook: str) -> list[str]:
    """The copy budgets on a hook: bpf filters' names as the tc binary reads them back, then the budgets of the
    programs on the hook's tcx list (this iproute2 cannot list those: read through bpf(2)), spelled the same."""
    names = [str(f["options"].get("bpf_name")) for f in bpf_filters(interface, hook)]  # type: ignore[attr-defined]
    return names + [
        state.budget.filter_name
        for state in map(copy_budget.read, tcx_program_ids(interface, hook))
        if state is not None and state.budget is not None
    ]


def bpf_filters(interface: str, hook: str) -> list[dict[str, object]]:
    """The bpf filters on a hook (tc also lists each priority's head, without options: not counted)."""
    return [f for f in tc_filters(interface, hook) if f.get("kind") == "bpf" and f.get("options")]


def tcx_program_ids(interface: str, hook: str) -> list[int]:
    if not copy_budget.tcx_available():
        return []
    return copy_budget.tcx_programs(int(Path(f"/sys/class/net/{interface}/ifindex").read_text()), hook)


def require_tcx() -> None:
    if not copy_budget.tcx_available():
        # cannot run here: a kernel before 6.6 has no tcx, and its budgets are cls_bpf filters (the "filter" cases).
        # This machine and CI run 6.18, where these cases run.
        pytest.skip("this kernel has no tcx (Linux < 6.6)")


@pytest.fixture(params=["tcx", "filter"])
def budget_hook(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each budget test runs with the budget on tcx and as a cls_bpf filter (what a kernel without tcx gets)."""
    if request.param == "tcx":
        require_tcx()
    else:
        monkeypatch.setattr(shadow_port, "BUDGET_ON_TCX", False)
    return str(request.param)


def test_detach_stops_the_copies_and_attach_restores_them(lab: LabState, port_number: int) -> None:
    vm1, _ = lab.vmns
    port = shadow_of(vm1)
    try:
        assert detach(port) is True
        assert detach(port) is False  # idempotent
        assert vm1.name not in [p.vmn for p in find_attached()]
        assert tc_filter_count(vm1.host_interface, "ingress") == 0
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=port.shadow_interface) == []
        # the live path does not care
        vm2 = lab.vmns[1]
        peer = Peer(vm2, port_number)
        try:
            send_burst(vm1, vm2, port_number)
            assert peer.count(BURST) == BURST
        finally:
            peer.close()
    finally:
        attach(vm1.name, vm1.host_interface)
    copies, received = burst_seen(lab, port_number + 1 if port_number < 65535 else port_number - 1)
    assert (copies[vm1.name], received) == (BURST, BURST)


def test_detach_keeping_the_interface_stops_the_copies_and_attach_feeds_it_again(
    lab: LabState, port_number: int
) -> None:
    vm1, _ = lab.vmns
    port = shadow_of(vm1)
    try:
        assert detach(port, keep_interface=True) is True
        assert tc_filter_count(vm1.host_interface, "ingress") == 0
        kept = shadow_of(vm1)  # still listed, fed by nothing
        assert kept.shadow_ifindex == port.shadow_ifindex
        assert kept.directions == ()
        assert kept.budget is None
    finally:
        attach(vm1.name, vm1.host_interface)
    assert shadow_of(vm1).shadow_ifindex == port.shadow_ifindex  # the same interface, fed again
    copies, received = burst_seen(lab, port_number)
    assert (copies[vm1.name], received) == (BURST, BURST)


def test_a_fresh_process_finds_the_attached_mirror_and_does_not_duplicate_it(lab: LabState, port_number: int) -> None:
    vm1, _ = lab.vmns
    script = (
        "import json, sys\n"
        "from vmshadow.capture import attach, find_attached\n"
        "found = [p for p in find_attached() if p.vmn == sys.argv[1]]\n"
        "attach(sys.argv[1], sys.argv[2])\n"
        "rows = [[p.vmn, p.host_interface, p.shadow_interface, list(p.directions), p.kind,\n"
        "         p.budget.filter_name if p.budget else None] for p in found]\n"
        "print(json.dumps(rows))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, vm1.name, vm1.host_interface],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (found,) = json.loads(result.stdout)
    assert found[:4] == [vm1.name, vm1.host_interface, shadow_interface_name(vm1.name), ["outgoing"]]
    assert found[5] == DEFAULT_BUDGET.filter_name  # the budget is read back from the kernel, not from a file
    copies, received = burst_seen(lab, port_number)
    assert (copies[vm1.name], received) == (BURST, BURST)


@pytest.fixture
def drop_to_vm2(lab: LabState) -> Iterator[str]:
    """A raw nftables bridge table (unique name) dropping vm1's IPv4 to vm2 on this lab's bridge only."""
    vm1, vm2 = lab.vmns
    table = f"vmsT{secrets.token_hex(3)}"
    rules = (
        f"add table bridge {table}\n"
        f"add chain bridge {table} forward {{ type filter hook forward priority 0; }}\n"
        # scoped to this lab's port (`meta ibrname` needs CONFIG_NFT_BRIDGE_META, which this kernel lacks)
        f'add rule bridge {table} forward iifname "{vm1.host_interface}" ip daddr {vm2.address.ip} counter drop\n'
    )
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, timeout=10)
    try:
        yield table
    finally:
        subprocess.run(["nft", "delete", "table", "bridge", table], check=False, timeout=10)


def test_mirror_before_tmr_a_dropped_packet_is_still_copied(lab: LabState, drop_to_vm2: str, port_number: int) -> None:
    vm1, _ = lab.vmns
    copies, received = burst_seen(lab, port_number)
    assert received == 0  # the rule drops every datagram on the bridge
    assert copies[vm1.name] == BURST  # the shadow port saw each one
    listing = subprocess.run(
        ["nft", "-j", "list", "table", "bridge", drop_to_vm2], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    (rule,) = [item["rule"] for item in json.loads(listing)["nftables"] if "rule" in item]
    (counter,) = [e["counter"] for e in rule["expr"] if "counter" in e]
    assert counter["packets"] == BURST


def test_mirror_counters_grow_with_traffic(lab: LabState, port_number: int) -> None:
    vm1, _ = lab.vmns
    port = shadow_of(vm1)
    before = mirror_counters(port)[Direction.OUTGOING]
    burst_seen(lab, port_number)
    after = mirror_counters(port)[Direction.OUTGOING]
    assert after.packets - before.packets >= BURST
    # each datagram is at least an IPv4 + UDP header and its payload (tc ingress counts no Ethernet header)
    assert after.bytes - before.bytes >= BURST * (20 + 8 + len(b"vmshadow 0"))
    assert Direction.INCOMING not in mirror_counters(port)


def test_both_directions_copy_what_the_vmn_receives_and_can_be_turned_off(lab: LabState, port_number: int) -> None:
    vm1, vm2 = lab.vmns
    try:
        port = attach(vm2.name, vm2.host_interface, both_directions=True, snaplen=256)
        assert port.directions == (Direction.OUTGOING, Direction.INCOMING)
        assert shadow_of(vm2).snaplen == 256
        copies, received = burst_seen(lab, port_number, readers=(vm1, vm2))
        assert received == BURST
        assert copies == {vm1.name: BURST, vm2.name: BURST}
        assert mirror_counters(port)[Direction.INCOMING].packets >= BURST
    finally:
        port = attach(vm2.name, vm2.host_interface)
    assert shadow_of(vm2).directions == (Direction.OUTGOING,)
    assert tc_filter_count(vm2.host_interface, "egress") == 0
    copies, _ = burst_seen(lab, port_number, readers=(vm2,))
    assert copies == {vm2.name: 0}


def test_mirror_counters_count_segments_while_the_reader_gets_gso_packets(lab: LabState, port_number: int) -> None:
    """Measures what docs/lab.md states: tc counts segments; the shadow port may receive merged super-packets."""
    vm1, vm2 = lab.vmns
    size = 1_000_000
    port = shadow_of(vm1)
    before = mirror_counters(port)[Direction.OUTGOING]
    server = open_socket(vm2.namespace, socket.AF_INET, socket.SOCK_STREAM)
    client = open_socket(vm1.namespace, socket.AF_INET, socket.SOCK_STREAM)
    received: list[int] = []

    def drain() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            got = 0
            for _ in range(size):  # bounded: every read returns at least one byte or ends the stream
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                got += len(chunk)
            received.append(got)

    try:
        server.bind((str(vm2.address.ip), port_number))
        server.listen(1)
        server.settimeout(10)
        reader = threading.Thread(target=drain)
        reader.start()
        client.settimeout(10)
        client.connect((str(vm2.address.ip), port_number))
        client.sendall(b"v" * size)
        client.shutdown(socket.SHUT_WR)
        reader.join(timeout=15)
        assert received == [size]
    finally:
        client.close()
        server.close()
    after = mirror_counters(port)[Direction.OUTGOING]
    assert after.bytes - before.bytes >= size
    assert after.packets - before.packets >= size // 1500  # at least one per MTU-sized segment


def test_attach_refuses_what_is_not_a_vmn_interface(lab: LabState) -> None:
    vm1, vm2 = lab.vmns
    with pytest.raises(InputError, match="no interface"):
        attach("ghost", "vmsTnothing0")
    with pytest.raises(InputError, match="shadow port"):
        attach("loop", shadow_interface_name(vm1.name))
    with pytest.raises(InputError, match="detach it"):
        attach(vm1.name, vm2.host_interface)  # one host-side interface per shadow port
    with pytest.raises(InputError, match="not a VMN name"):
        attach("1bad name", vm1.host_interface)
    assert shadow_of(vm1).host_interface == vm1.host_interface


def test_shadow_interface_names_fit_and_are_stable() -> None:
    assert shadow_interface_name("vm1") == "vmss-vm1"
    assert shadow_interface_name("web-frontend") == shadow_interface_name("web-frontend")
    long = shadow_interface_name("web-frontend")
    assert long.startswith("vmss-web-")
    assert len(long) == 15
    assert shadow_interface_name("web-frontend-2") != long
    assert all(len(shadow_interface_name("x" * n)) <= 15 for n in range(1, 64))


def test_copies_over_the_budget_are_shed_and_counted_while_every_live_packet_passes(
    lab: LabState, port_number: int, budget_hook: str
) -> None:
    vm1, vm2 = lab.vmns
    sent, budget = 150, CopyBudget(pps=20, burst=10)  # Peer.count reads at most 10 * BURST
    try:
        port = attach(vm1.name, vm1.host_interface, budget=budget)
        assert shadow_of(vm1).budget == budget
        mirrored_before = mirror_counters(port)[Direction.OUTGOING].packets
        shed_before = shed_counters(port).packets
        reader, peer = ShadowReader(port.shadow_interface), Peer(vm2, port_number)
        peer.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)  # room for the whole burst
        try:
            started = time.monotonic()
            send_burst(vm1, vm2, port_number, count=sent)
            copies = reader.count_udp(port_number, sent, deadline_s=AFTER_S)
            received = peer.count(sent)
            elapsed = time.monotonic() - started
        finally:
            reader.close()
            peer.close()
        mirrored = mirror_counters(port)[Direction.OUTGOING].packets - mirrored_before
        shed = shed_counters(port).packets - shed_before
    finally:
        attach(vm1.name, vm1.host_interface)
    assert received == sent, "the live path never waits for the budget"
    assert copies <= budget.burst + budget.pps * elapsed + 1, f"{copies} copies in {elapsed:.2f} s"
    assert shed >= sent - copies - 2 > 0
    # every packet vm1 sent was copied or shed, once (allowing 2 packets of the host's own, e.g. an ARP)
    assert sent <= mirrored + shed <= sent + 2
    assert copies <= mirrored


def test_a_mirror_without_a_budget_is_upgraded_on_attach_and_budgets_are_not_duplicated(
    lab: LabState, port_number: int, budget_hook: str
) -> None:
    vm1, _ = lab.vmns
    try:
        old = attach(vm1.name, vm1.host_interface, budget=None)  # as a vmshadow without budgets left it
        assert old.budget is None
        assert shadow_of(vm1).budget is None
        assert budget_names(vm1.host_interface, "ingress") == []
        upgraded = attach(vm1.name, vm1.host_interface)
        assert upgraded.budget == shadow_of(vm1).budget == DEFAULT_BUDGET
        changed = CopyBudget(pps=DEFAULT_BUDGET.pps * 2, burst=DEFAULT_BUDGET.burst)
        attach(vm1.name, vm1.host_interface, budget=changed)
        attach(vm1.name, vm1.host_interface, budget=changed)
        assert budget_names(vm1.host_interface, "ingress") == [changed.filter_name]  # replaced, not added
        assert shadow_of(vm1).budget == changed
        assert tc_filter_count(vm1.host_interface, "ingress") == 1
    finally:
        attach(vm1.name, vm1.host_interface)
    assert budget_names(vm1.host_interface, "ingress") == [DEFAULT_BUDGET.filter_name]
    copies, received = burst_seen(lab, port_number)
    assert (copies[vm1.name], received) == (BURST, BURST)


def test_both_directions_share_one_budget_and_detach_removes_it(lab: LabState, budget_hook: str) -> None:
    _, vm2 = lab.vmns
    try:
        attach(vm2.name, vm2.host_interface, both_directions=True)
        assert budget_names(vm2.host_interface, "ingress") == [DEFAULT_BUDGET.filter_name]
        assert budget_names(vm2.host_interface, "egress") == [DEFAULT_BUDGET.filter_name]
        ids = budget_program_ids(vm2.host_interface)
        assert len(ids) == 2
        assert len(set(ids)) == 1, "one program, so one bucket per VMN"
        assert detach(shadow_of(vm2)) is True
        assert budget_names(vm2.host_interface, "ingress") == budget_names(vm2.host_interface, "egress") == []
    finally:
        attach(vm2.name, vm2.host_interface)
    assert budget_names(vm2.host_interface, "egress") == []  # back to one direction


def budget_program_ids(interface: str) -> list[int]:
    return [
        int(f["options"]["prog"]["id"])  # type: ignore[index]
        for hook in ("ingress", "egress")
        for f in bpf_filters(interface, hook)
    ] + [i for hook in ("ingress", "egress") for i in tcx_program_ids(interface, hook)]


def test_a_budget_left_as_a_filter_moves_to_tcx_on_attach(
    lab: LabState, port_number: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a vmshadow before tcx budgets (or a kernel without tcx) left is replaced, not doubled."""
    require_tcx()
    vm1, _ = lab.vmns
    with monkeypatch.context() as old_kernel:
        old_kernel.setattr(shadow_port, "BUDGET_ON_TCX", False)
        attach(vm1.name, vm1.host_interface)
    assert len(bpf_filters(vm1.host_interface, "ingress")) == 1
    assert tcx_program_ids(vm1.host_interface, "ingress") == []
    attach(vm1.name, vm1.host_interface)
    assert bpf_filters(vm1.host_interface, "ingress") == []
    assert budget_names(vm1.host_interface, "ingress") == [DEFAULT_BUDGET.filter_name]
    assert len(tcx_program_ids(vm1.host_interface, "ingress")) == 1
    assert shadow_of(vm1).budget == DEFAULT_BUDGET
    copies, received = burst_seen(lab, port_number)
    assert (copies[vm1.name], received) == (BURST, BURST)


def test_a_bad_budget_is_refused_naming_the_field_and_changes_nothing(lab: LabState) -> None:
    vm1, _ = lab.vmns
    with pytest.raises(InputError, match="copy budget 0 packets/s") as caught:
        attach(vm1.name, vm1.host_interface, budget=CopyBudget(pps=0, burst=10))
    assert caught.value.issues[0].field == "pps"
    with pytest.raises(InputError, match="copy burst"):
        CopyBudget(pps=10, burst=0)
    assert shadow_of(vm1).budget == DEFAULT_BUDGET
    assert budget_names(vm1.host_interface, "ingress") == [DEFAULT_BUDGET.filter_name]
