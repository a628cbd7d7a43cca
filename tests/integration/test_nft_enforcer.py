"""`NftEnforcer` on the real kernel, with real traffic, inside a throw-away lab (tests/integration/netlab.py).

The lab is one namespace holding a bridge and three VMN namespaces with 198.18.0.x addresses; the enforcer runs nft
inside the bridge's namespace (``netns=``), so nothing touches the root namespace. Every test applies its own
ruleset to a fresh store and removes the table afterwards. Traffic is real: TCP connects, UDP echoes and ICMP
echoes from inside the VMN namespaces. A blocked probe costs `BLOCKED_S`; conditions are polled, never slept on.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.integration import netlab
from vmshadow.adapters.sql import SqlStore, open_store
from vmshadow.app.tm import diff_tmrsets
from vmshadow.cli.main import app
from vmshadow.domain.codec import tmrset_to_json
from vmshadow.domain.errors import EnforcementError, InputError
from vmshadow.domain.net import PortRange, Protocol
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.enforcement import nft_compiler as compiler
from vmshadow.enforcement.nft import NftEnforcer
from vmshadow.ports.enforcer import StagedRule

BLOCKED_S = 0.3  # a probe that gets no answer in this long on a veth pair is blocked (RTT is microseconds)
TCP, OTHER = netlab.PORTS
FLOOD = 7009  # a port no agent listens on


@pytest.fixture(scope="module")
def net() -> Iterator[netlab.Lab]:
    with netlab.lab(vmns=3) as lab:
        yield lab


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'vmshadow.db'}")
    yield s
    s.close()


@pytest.fixture
def enforcer(net: netlab.Lab, store: SqlStore) -> Iterator[NftEnforcer]:
    e = NftEnforcer(store, bridges=[net.bridge], netns=net.host_ns)
    try:
        yield e
    finally:
        e.remove()


def vmns(net: netlab.Lab, *, by: str = "address") -> tuple[VMN, ...]:
    """vm1..vm3 of the lab, known by their address, MAC or bridge port only."""
    out = []
    for v in net.vmns:
        if by == "address":
            out.append(VMN(f"vm{v.index}", addresses=(ipaddress.ip_address(v.address),)))
        elif by == "mac":
            out.append(VMN(f"vm{v.index}", macs=(v.mac,)))
        else:
            out.append(VMN(f"vm{v.index}", interfaces=(v.port,)))
    return tuple(out)


def rule(
    tmr_id: str,
    priority: int,
    src: str,
    dst: str,
    action: Action,
    protocol: Protocol = Protocol.ANY,
    ports: tuple[int, ...] = (),
    expires_at: datetime | None = None,
) -> TMR:
    def endpoint(text: str) -> Endpoint:
        return Endpoint.any() if text == "any" else Endpoint.vmn(text)

    return TMR(
        tmr_id,
        priority,
        endpoint(src),
        endpoint(dst),
        action,
        protocol=protocol,
        ports=tuple(PortRange.single(p) for p in ports),
        expires_at=expires_at,
    )


def tmrset(net: netlab.Lab, *tmrs: TMR, default: Action = Action.ALLOW, by: str = "address") -> TMRSet:
    return TMRSet(tmrs=tmrs, vmns=vmns(net, by=by), default_action=default)


def now() -> datetime:
    return datetime.now(UTC)


def nft_listing(net: netlab.Lab) -> dict[str, Any]:
    """The table as the kernel holds it, read with plain nft (no vmshadow code)."""
    out = netlab.run("ip", "netns", "exec", net.host_ns, "nft", "-j", "list", "table", "bridge", "vmshadow").stdout
    listing: dict[str, Any] = json.loads(out)
    return listing


def deny_tcp(net: netlab.Lab, **kw: Any) -> TMRSet:
    return tmrset(net, rule("deny-tcp", 10, "vm1", "vm2", Action.DENY, Protocol.TCP, (TCP,), **kw))


# --- traffic ---


def test_allowed_traffic_passes_and_denied_traffic_is_blocked(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    vm1, vm2, vm3 = net.vmns
    assert vm1.connect(vm2.address, TCP)
    enforcer.apply(deny_tcp(net), now())
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S)
    assert vm1.connect(vm2.address, OTHER), "another port is not denied"
    assert vm1.udp(vm2.address, TCP), "another protocol is not denied"
    assert vm3.connect(vm2.address, TCP), "another source is not denied"
    assert vm2.connect(vm1.address, TCP), "the other direction is not denied"
    assert vm1.ping(vm2.address)


def test_default_deny_lets_replies_of_allowed_flows_back_and_nothing_else(
    net: netlab.Lab, enforcer: NftEnforcer
) -> None:
    vm1, vm2, vm3 = net.vmns
    enforcer.apply(
        tmrset(
            net,
            rule("vm1-tcp-vm2", 10, "vm1", "vm2", Action.ALLOW, Protocol.TCP, (TCP,)),
            rule("vm1-udp-vm2", 10, "vm1", "vm2", Action.ALLOW, Protocol.UDP, (TCP,)),
            rule("vm1-ping", 20, "vm1", "any", Action.ALLOW, Protocol.ICMP),
            default=Action.DENY,
        ),
        now(),
    )
    assert vm1.connect(vm2.address, TCP), "the SYN-ACK comes back as a reply"
    assert vm1.udp(vm2.address, TCP), "the UDP echo comes back as a reply"
    assert vm1.ping(vm3.address), "the echo reply comes back"
    assert not vm1.connect(vm2.address, OTHER, BLOCKED_S)
    assert not vm2.connect(vm1.address, TCP, BLOCKED_S), "vm2 may answer vm1, not open flows to it"
    assert not vm3.ping(vm1.address, BLOCKED_S), "being pinged does not allow pinging back"
    assert not vm2.udp(vm3.address, TCP, BLOCKED_S)


def test_first_match_by_priority_decides(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    vm1, vm2, _ = net.vmns
    allow = rule("allow", 10, "vm1", "vm2", Action.ALLOW, Protocol.TCP, (TCP,))
    deny = rule("deny", 20, "vm1", "vm2", Action.DENY, Protocol.TCP)
    enforcer.apply(tmrset(net, allow, deny), now())
    assert vm1.connect(vm2.address, TCP)
    assert not vm1.connect(vm2.address, OTHER, BLOCKED_S)
    enforcer.apply(tmrset(net, TMR(**{**_fields(allow), "priority": 30}), deny), now())
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S)


def _fields(t: TMR) -> dict[str, Any]:
    return {name: getattr(t, name) for name in TMR.__dataclass_fields__}


@pytest.mark.parametrize("by", ["address", "mac", "port"])
def test_a_vmn_is_matched_by_each_of_its_identifiers(net: netlab.Lab, enforcer: NftEnforcer, by: str) -> None:
    vm1, vm2, vm3 = net.vmns
    enforcer.apply(tmrset(net, rule("deny", 10, "vm1", "vm2", Action.DENY), by=by), now())
    assert not vm1.ping(vm2.address, BLOCKED_S)
    assert vm3.ping(vm2.address)
    assert vm1.ping(vm3.address)


def test_per_vmn_default_of_the_source_comes_first(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    vm1, vm2, vm3 = net.vmns
    base = tmrset(net, default=Action.ALLOW)
    locked = TMRSet(vmns=base.vmns, default_action=Action.ALLOW, vmn_defaults={"vm1": Action.DENY})
    enforcer.apply(locked, now())
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S), "vm1 sends nothing no TMR allows"
    assert not vm2.connect(vm1.address, TCP, BLOCKED_S), "nor receives (destination default)"
    assert vm2.connect(vm3.address, TCP)
    opened = TMRSet(
        vmns=base.vmns,
        default_action=Action.DENY,
        vmn_defaults={"vm1": Action.ALLOW, "vm2": Action.DENY},
    )
    enforcer.apply(opened, now())
    assert vm1.connect(vm2.address, TCP), "the source's default (allow) wins over the destination's (deny)"
    assert not vm3.connect(vm2.address, TCP, BLOCKED_S)


def test_other_bridges_are_left_alone(net: netlab.Lab, store: SqlStore) -> None:
    other = f"{net.tag}b2"
    netlab.run("ip", "-n", net.host_ns, "link", "add", other, "type", "bridge")
    enforcer = NftEnforcer(store, bridges=[other], netns=net.host_ns)
    try:
        enforcer.apply(tmrset(net, rule("deny-all", 1, "any", "any", Action.DENY), default=Action.DENY), now())
        vm1, vm2, _ = net.vmns
        assert vm1.connect(vm2.address, TCP), "the lab's bridge is not managed: its traffic is untouched"
        assert vm1.ping(vm2.address)
        assert enforcer.last_report is not None
        assert enforcer.last_report.ports == ()
    finally:
        enforcer.remove()
        netlab.run("ip", "-n", net.host_ns, "link", "del", other)


# --- expiry, failure, rollback, counters, restart ---


def test_temporary_tmr_stops_matching_at_expiry_while_vmshadow_is_stopped(
    net: netlab.Lab, enforcer: NftEnforcer
) -> None:
    vm1, vm2, _ = net.vmns
    applied_at = now()
    enforcer.apply(deny_tcp(net, expires_at=applied_at + timedelta(seconds=3)), applied_at)
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S)
    # From here on no vmshadow code runs: only the kernel and the lab's probes.
    took = netlab.wait_until(lambda: vm1.connect(vm2.address, TCP, BLOCKED_S), timeout_s=15, interval_s=0.2)
    assert took is not None, "still blocked 15 s after a 3 s expiry"
    passed_at = now()
    assert passed_at >= applied_at + timedelta(seconds=2), "it expired early: the timeout is whole seconds"
    assert passed_at <= applied_at + timedelta(seconds=3 + 1.5)
    listing = nft_listing(net)
    assert compiler.version_of(listing) == 1, "nothing re-applied: the kernel removed the element by itself"
    temporary = compiler.temporary_maps(listing)
    assert temporary, "the temporary TMR's map is still there"
    assert "tmr deny-tcp" not in compiler.tmr_element_comments(listing), "its element expired"


def _break_with_ct(document: dict[str, Any]) -> dict[str, Any]:
    """Add a rule the kernel refuses on this machine (bridge conntrack is not built in): EPROTO."""
    ct = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}}
    body = {"family": "bridge", "table": "vmshadow", "chain": "forward", "expr": [ct, {"accept": None}]}
    return {"nftables": [*document["nftables"], {"add": {"rule": body}}]}


def _break_with_port(document: dict[str, Any]) -> dict[str, Any]:
    """Add an element nft itself refuses: a port out of range."""
    body = {"family": "bridge", "table": "vmshadow", "name": "broken", "type": "inet_service", "elem": [70000]}
    return {"nftables": [*document["nftables"], {"add": {"set": body}}]}


@pytest.mark.parametrize("check", [True, False], ids=["with-check", "commit-only"])
@pytest.mark.parametrize(
    ("breaker", "message"),
    [(_break_with_ct, "Protocol error"), (_break_with_port, "out of range")],
    ids=["kernel", "nft"],
)
def test_a_refused_apply_leaves_the_previous_version_in_force(
    net: netlab.Lab,
    enforcer: NftEnforcer,
    monkeypatch: pytest.MonkeyPatch,
    check: bool,
    breaker: Any,
    message: str,
) -> None:
    vm1, vm2, _ = net.vmns
    enforcer.check = check
    enforcer.apply(deny_tcp(net), now())
    before = nft_listing(net)
    real = compiler.compile_counted  # what NftEnforcer.apply compiles with (the document and its layer count)

    def broken(*a: Any, **kw: Any) -> tuple[dict[str, Any], int]:
        document, layers = real(*a, **kw)
        return breaker(document), layers

    monkeypatch.setattr(compiler, "compile_counted", broken)
    with pytest.raises(EnforcementError, match=message):
        enforcer.apply(tmrset(net), now())  # would allow everything
    after = nft_listing(net)
    assert compiler.comments_of(after) == compiler.comments_of(before)
    assert compiler.sets_of(after).keys() == compiler.sets_of(before).keys()
    assert enforcer.current_version() == 1
    assert [v.version for v in enforcer.store.tmr_versions()] == [1], "a refused version is not recorded"
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S), "version 1 still denies"


def test_a_failed_verification_puts_the_previous_version_back(
    net: netlab.Lab, enforcer: NftEnforcer, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm1, vm2, _ = net.vmns
    enforcer.apply(deny_tcp(net), now())
    real = NftEnforcer.listing

    def lost_a_rule(self: NftEnforcer, chain: str | None = None) -> dict[str, Any] | None:
        listing = real(self, chain)
        if chain is None and listing is not None:  # the read-back after the commit: pretend a rule is missing
            listing["nftables"] = listing["nftables"][:-1]
        return listing

    monkeypatch.setattr(NftEnforcer, "listing", lost_a_rule)
    with pytest.raises(EnforcementError, match=r"rules.*version 1 is back in force"):
        enforcer.apply(tmrset(net), now())
    monkeypatch.undo()
    assert enforcer.current_version() == 1
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S)
    assert [v.version for v in enforcer.store.tmr_versions()] == [1]


def test_rollback_puts_an_earlier_version_back_as_a_new_one(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    vm1, vm2, _ = net.vmns
    first = deny_tcp(net)
    assert enforcer.apply(first, now(), comment="deny").version == 1
    assert enforcer.apply(tmrset(net), now(), comment="open").version == 2
    assert vm1.connect(vm2.address, TCP)
    back = enforcer.rollback(1, now())
    assert back.version == 3
    assert tmrset_to_json(back.tmrset) == tmrset_to_json(first)
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S)
    assert [(v.version, v.comment) for v in enforcer.store.tmr_versions()] == [
        (1, "deny"),
        (2, "open"),
        (3, "rollback to version 1"),
    ]
    with pytest.raises(EnforcementError, match=r"no version 9 .*have 1\.\.3"):
        enforcer.rollback(9, now())


def test_counters_count_hits_on_the_tmr_that_matched(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    vm1, vm2, vm3 = net.vmns
    enforcer.apply(
        tmrset(
            net,
            rule("ping-vm2", 10, "vm1", "vm2", Action.ALLOW, Protocol.ICMP),
            rule("deny-vm3", 20, "vm3", "vm2", Action.DENY, Protocol.TCP, (TCP,)),
            rule("never", 30, "vm2", "vm3", Action.DENY, Protocol.UDP),
        ),
        now(),
    )
    assert enforcer.counters() == {"ping-vm2": 0, "deny-vm3": 0, "never": 0}
    for _ in range(3):
        assert vm1.ping(vm2.address)
    assert not vm3.connect(vm2.address, TCP, BLOCKED_S)
    hits = enforcer.counters()
    assert hits["ping-vm2"] == 3, "three echo requests (the replies count as replies)"
    assert hits["deny-vm3"] >= 1
    assert hits["never"] == 0
    assert enforcer.rule_counters()[compiler.REPLIES_COMMENT][0] >= 3


def test_a_tmr_repeating_an_earlier_one_is_in_force_counts_nothing_and_the_earlier_one_decides(
    net: netlab.Lab, enforcer: NftEnforcer
) -> None:
    vm1, vm2, _ = net.vmns
    enforcer.apply(
        tmrset(
            net,
            rule("deny-tcp", 10, "vm1", "vm2", Action.DENY, Protocol.TCP, (TCP,)),
            rule("allow-tcp-again", 20, "vm1", "vm2", Action.ALLOW, Protocol.TCP, (TCP,)),
            rule("deny-for-a-while", 30, "vm1", "vm2", Action.DENY, Protocol.TCP, (TCP,), now() + timedelta(hours=1)),
        ),
        now(),
    )
    report = enforcer.last_report
    assert report is not None
    assert report.shadowed == ("allow-tcp-again", "deny-for-a-while")
    assert (report.layers, report.tmrs_in_force) == (1, 3)
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S), "the first TMR decides, not its allowing repeat"
    hits = enforcer.counters()  # read back from the kernel like every TMR's
    assert hits["deny-tcp"] >= 1
    assert (hits["allow-tcp-again"], hits["deny-for-a-while"]) == (0, 0)
    held = compiler.tmr_maps(nft_listing(net))
    (timeout,) = [e["timeout"] for e in compiler.map_elements(held["tmrs_shadowed_t"])]
    assert 3590 <= timeout <= 3600, "a temporary repeat still expires in the kernel"


def test_the_version_in_force_survives_a_restart(net: netlab.Lab, enforcer: NftEnforcer, store: SqlStore) -> None:
    applied = enforcer.apply(deny_tcp(net), now())
    again = NftEnforcer(store, bridges=[net.bridge], netns=net.host_ns)  # a new process, the same kernel and store
    current = again.current()
    assert current is not None
    assert (current.version, current.tmrset) == (applied.version, applied.tmrset)
    with open_store("sqlite://") as empty:
        stranger = NftEnforcer(empty, bridges=[net.bridge], netns=net.host_ns)
        with pytest.raises(EnforcementError, match="store does not have"):
            stranger.current()


def test_remove_deletes_the_table(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    vm1, vm2, _ = net.vmns
    assert enforcer.current() is None
    assert enforcer.remove() is False
    enforcer.apply(deny_tcp(net), now())
    assert enforcer.remove() is True
    assert enforcer.current_version() is None
    assert vm1.connect(vm2.address, TCP)


def test_ports_are_the_bridges_and_the_declared_interfaces_not_another_bridges(
    net: netlab.Lab, enforcer: NftEnforcer
) -> None:
    other = f"{net.tag}b3"
    netlab.run("ip", "-n", net.host_ns, "link", "add", other, "type", "bridge")
    netlab.run("ip", "-n", net.host_ns, "link", "add", f"{net.tag}q1", "type", "veth", "peer", "name", f"{net.tag}q2")
    netlab.run("ip", "-n", net.host_ns, "link", "set", f"{net.tag}q1", "master", other)
    try:
        declared = TMRSet(
            vmns=(VMN("later", interfaces=(f"{net.tag}p9",)), VMN("elsewhere", interfaces=(f"{net.tag}q1",)))
        )
        assert enforcer.managed_ports(declared) == sorted([v.port for v in net.vmns] + [f"{net.tag}p9"])
    finally:
        netlab.run("ip", "-n", net.host_ns, "link", "del", f"{net.tag}q1")
        netlab.run("ip", "-n", net.host_ns, "link", "del", other)


def test_a_table_without_a_version_is_reported_and_replaced(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    nft = ("ip", "netns", "exec", net.host_ns, "nft")
    netlab.run(*nft, "add", "table", "bridge", "vmshadow")
    assert enforcer.current_version() is None, "a table without the chain allowed holds no version"
    netlab.run(*nft, "add", "chain", "bridge", "vmshadow", "allowed")
    with pytest.raises(EnforcementError, match="carries no vmshadow version"):
        enforcer.current_version()
    assert enforcer.apply(deny_tcp(net), now()).version == 1
    assert enforcer.current_version() == 1


def test_a_missing_bridge_is_an_enforcement_error(net: netlab.Lab, store: SqlStore) -> None:
    enforcer = NftEnforcer(store, bridges=["vmsnobridge"], netns=net.host_ns)
    with pytest.raises(EnforcementError, match="no bridge named vmsnobridge"):
        enforcer.apply(TMRSet(), now())
    assert store.tmr_versions() == []


def test_replacing_under_traffic_lets_nothing_through(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    """Atomicity of add/delete/add table in one batch: a flood that a TMR denies gets nothing through while the
    ruleset is replaced again and again (the check is left out to replace as often as possible)."""
    vm1, vm2, _ = net.vmns
    enforcer.check = False
    blocked = tmrset(net, rule("deny-udp", 10, "vm1", "vm2", Action.DENY, Protocol.UDP, (FLOOD,)))
    enforcer.apply(blocked, now())
    receiver = _popen(vm2.netns, _RECEIVE, str(FLOOD), "3.0")
    sender = _popen(vm1.netns, _SEND, vm2.address, str(FLOOD), "1.5")
    replaces, deadline = 0, time.monotonic() + 1.5
    while time.monotonic() < deadline and replaces < 200:
        enforcer.apply(blocked, now())
        replaces += 1
    sent = int(sender.communicate(timeout=20)[0])
    received = int(receiver.communicate(timeout=20)[0])
    assert replaces >= 5
    assert sent > 1000
    assert received == 0, f"{received} of {sent} datagrams slipped through {replaces} replaces"


_RECEIVE = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.2)
n, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        s.recv(64)
        n += 1
    except OSError:
        pass
print(n)
"""

_SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, end = 0, time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    for _ in range(50):
        s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
        n += 1
print(n)
"""


def _popen(netns: str, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-I", "-c", code, *args], stdout=subprocess.PIPE, text=True
    )


def test_ten_thousand_tmrs_apply_and_verify(net: netlab.Lab, enforcer: NftEnforcer) -> None:
    vm1, vm2, _ = net.vmns
    many = tuple(
        TMR(
            f"t{i}",
            100 + i,
            Endpoint.network(f"198.19.{i // 256}.{i % 256}/32"),
            Endpoint.any(),
            Action.DENY,
            protocol=Protocol.TCP,
            ports=(PortRange.single(1000 + i % 1000),),
        )
        for i in range(10_000)
    )
    big = TMRSet(tmrs=(*many, *deny_tcp(net).tmrs), vmns=vmns(net))
    enforcer.check = False
    enforcer.apply(big, now())
    report = enforcer.last_report
    assert report is not None
    assert report.tmrs_in_force == 10_001
    print(f"\n10,000 TMRs: {report.rules} rules, timings {report.timings_s}")
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S), "the last TMR, after 10,000 others, still matches"
    assert vm1.connect(vm2.address, OTHER)


# --- the CLI ---


def vmshadow_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed command in a process of its own, as a user runs it (about 1.5 s of imports each time)."""
    return subprocess.run(
        [sys.executable, "-m", "vmshadow", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def vmshadow(*args: str | Path) -> Result:
    """The same command run in this process (Typer's runner), for the many calls of one scenario."""
    return CliRunner().invoke(app, [str(a) for a in args])


def _rules_file(path: Path, net: netlab.Lab, *, port: int, extra: str = "") -> Path:
    vm1, vm2, _ = net.vmns
    path.write_text(
        f"""
vmns:
  vm1: {{addresses: [{vm1.address}], interfaces: [{vm1.port}]}}
  vm2: {{addresses: [{vm2.address}]}}
tmrs:
  - {{id: deny-tcp, priority: 10, src: vm1, dst: vm2, protocol: tcp, ports: {port}, action: deny}}
{extra}""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def cli_table(net: netlab.Lab) -> Iterator[None]:
    """Removes whatever table a CLI test leaves in the lab."""
    yield
    netlab.run("ip", "netns", "exec", net.host_ns, "nft", "delete", "table", "bridge", "vmshadow", check=False)


@pytest.mark.usefixtures("cli_table")
def test_cli_apply_diff_history_rollback(net: netlab.Lab, tmp_path: Path) -> None:
    vm1, vm2, _ = net.vmns
    where = ["--db", str(tmp_path / "v.db"), "--bridge", net.bridge, "--netns", net.host_ns]
    rules = _rules_file(tmp_path / "tmrs.yaml", net, port=TCP)

    nothing = vmshadow("tmrs", "history", *where)
    assert nothing.exit_code == 0, nothing.stderr
    assert "No versions yet" in nothing.stdout

    applied = vmshadow_process("tmrs", "apply", rules, *where, "--json")
    assert applied.returncode == 0, applied.stderr
    first = json.loads(applied.stdout)
    assert first["version"] == 1
    assert first["tmrs_in_force"] == 1
    # one TMR, alone in its layer: rules over vm1's named sets (its port, its address), no set elements
    assert (first["tmr_rules"], first["rule_tmrs"]) == (0, 1)
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S)

    same = vmshadow("tmrs", "diff", rules, *where, "--json")
    assert same.exit_code == 0, same.stderr
    assert json.loads(same.stdout) == {"in_force": 1, "added": [], "removed": [], "changed": [], "other": []}

    extra = "  - {id: ping, priority: 20, src: vm1, dst: any, protocol: icmp, action: allow}\n"
    extra += "  - {id: ping-again, priority: 30, src: vm1, dst: any, protocol: icmp, action: deny}\n"
    _rules_file(rules, net, port=OTHER, extra=extra)
    changed = json.loads(vmshadow("tmrs", "diff", rules, *where, "--json").stdout)
    assert [t["id"] for t in changed["added"]] == ["ping", "ping-again"]
    assert [(c["id"], c["fields"]) for c in changed["changed"]] == [("deny-tcp", ["ports"])]
    text = vmshadow("tmrs", "diff", rules, *where).stdout
    assert "Against version 1" in text
    assert "+ ping" in text
    assert "~ deny-tcp  ports: ['7001'] -> ['7002']" in text

    second = vmshadow("tmrs", "apply", rules, *where, "--comment", "move the deny")
    assert second.exit_code == 0, second.stderr
    assert "version 2 in force" in second.stdout
    assert "1 TMRs can never match" in second.stdout
    assert "(ping-again)" in second.stdout
    assert vm1.connect(vm2.address, TCP)

    back = vmshadow("tmrs", "rollback", "1", *where, "--json")
    assert back.exit_code == 0, back.stderr
    assert json.loads(back.stdout)["version"] == 3
    assert not vm1.connect(vm2.address, TCP, BLOCKED_S)

    history = json.loads(vmshadow("tmrs", "history", *where, "--json").stdout)
    assert history["in_force"] == 3
    assert [(v["version"], v["tmrs"], v["in_force"]) for v in history["versions"]] == [
        (1, 1, False),
        (2, 3, False),
        (3, 1, True),
    ]
    assert [v["comment"] for v in history["versions"]] == [
        f"applied {rules}",
        "move the deny",
        "rollback to version 1",
    ]
    assert all(v["author"] for v in history["versions"])
    lines = vmshadow("tmrs", "history", *where).stdout.splitlines()
    assert lines[-1].startswith("*    3 ")


def test_diff_names_every_kind_of_change() -> None:
    vm = VMN("vm1", addresses=(ipaddress.ip_address("198.18.0.11"),))
    a = TMR("a", 10, Endpoint.any(), Endpoint.any(), Action.DENY)
    b = TMR("b", 10, Endpoint.any(), Endpoint.vmn("vm1"), Action.ALLOW)
    before = TMRSet(tmrs=(a, b), vmns=(vm,), default_action=Action.ALLOW)
    assert diff_tmrsets(before, before, in_force=4).empty
    moved_vm = VMN("vm1", addresses=(ipaddress.ip_address("198.18.0.99"),))
    after = TMRSet(
        tmrs=(b, a),  # equal priorities: the order changes what matches first
        vmns=(moved_vm,),
        default_action=Action.DENY,
        vmn_defaults={"vm1": Action.ALLOW},
    )
    diff = diff_tmrsets(before, after, in_force=4)
    assert (diff.added, diff.removed, diff.changed) == ((), (), ())
    assert diff.other == (
        "default action: allow -> deny",
        "default for VMN vm1: - -> allow",
        "VMN vm1 changed",
        "order of TMRs with equal priority changed",
    )
    fresh = diff_tmrsets(None, after)
    assert [t["id"] for t in fresh.added] == ["b", "a"]
    assert fresh.in_force is None


@pytest.mark.usefixtures("cli_table")
def test_cli_errors_exit_2_for_bad_input_and_3_for_the_kernel(net: netlab.Lab, tmp_path: Path) -> None:
    where = ["--db", str(tmp_path / "v.db"), "--netns", net.host_ns]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tmrs:\n  - {id: a, priority: 1, src: any, dst: any, action: maybe}\n", encoding="utf-8")
    result = vmshadow("tmrs", "apply", bad, *where, "--bridge", net.bridge)
    assert result.exit_code == 2
    assert "bad.yaml:2" in result.stderr

    rules = _rules_file(tmp_path / "tmrs.yaml", net, port=TCP)
    result = vmshadow("tmrs", "apply", rules, *where, "--bridge", "vmsnobridge")
    assert result.exit_code == 3
    assert "no bridge named vmsnobridge" in result.stderr

    result = vmshadow("tmrs", "rollback", "9", *where, "--bridge", net.bridge)
    assert result.exit_code == 3
    assert "no version 9" in result.stderr


# --- staged rules: counting only ---


def test_staged_rules_count_once_per_packet_decide_nothing_and_carry_over(
    net: netlab.Lab, enforcer: NftEnforcer, store: SqlStore
) -> None:
    vm1, vm2, vm3 = net.vmns
    # vm1 known by address, MAC and port at once: a packet carries all three, the staged rule counts it once
    known = tuple(
        VMN(f"vm{v.index}", addresses=(ipaddress.ip_address(v.address),), macs=(v.mac,), interfaces=(v.port,))
        for v in net.vmns
    )
    in_force = TMRSet(tmrs=(rule("allow-ping-vm3", 10, "vm1", "vm3", Action.ALLOW, Protocol.ICMP),), vmns=known)
    staged = [
        StagedRule("prop-ping", rule("deny-ping", 20, "vm1", "any", Action.DENY, Protocol.ICMP)),
        StagedRule("prop-tcp", rule("deny-tcp", 5, "vm2", "vm1", Action.DENY, Protocol.TCP, (TCP,))),
    ]
    first = enforcer.apply(in_force, now(), staged)
    assert first.staged == tuple(staged)
    assert enforcer.staged_counters() == {"prop-ping": 0, "prop-tcp": 0}
    for _ in range(3):
        assert vm1.ping(vm2.address), "a staged deny blocks nothing"
    assert vm1.ping(vm3.address), "decided by the earlier allow: not the staged rule's"
    assert vm2.connect(vm1.address, TCP)
    counted = enforcer.staged_counters()
    assert counted["prop-ping"] == 3, "three echo requests, each counted once (address, MAC and port all match)"
    assert counted["prop-tcp"] >= 1
    assert enforcer.counters() == {"allow-ping-vm3": 1}, "the TMRs in force count as before"

    enforcer.apply(in_force, now())  # names no staged rules: those in force stay, their counts carried over
    assert vm1.ping(vm2.address)
    assert enforcer.staged_counters()["prop-ping"] == 4
    restarted = NftEnforcer(store, bridges=[net.bridge], netns=net.host_ns)
    assert restarted.staged_counters()["prop-ping"] == 4, "the count lives in the kernel and the stored version"
    back = restarted.rollback(first.version, now())
    assert [s.proposal_id for s in back.staged] == ["prop-ping", "prop-tcp"], "a rollback keeps today's staged"
    assert restarted.staged_counters()["prop-ping"] == 4

    enforcer.apply(in_force, now(), staged[1:])  # prop-ping unstaged
    assert enforcer.staged_counters() == {"prop-tcp": counted["prop-tcp"]}
    held = compiler.counters_of(nft_listing(net))  # read with plain nft
    assert "staged prop-tcp" in held
    assert "staged prop-ping" not in held
    assert enforcer.last_report is not None
    assert enforcer.last_report.staged == 1
    with pytest.raises(InputError, match="staged twice"):
        enforcer.apply(in_force, now(), [staged[1], staged[1]])
