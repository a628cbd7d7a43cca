"""The lab in the kernel (root): round trip, idempotency, exec, reachability inside, none outside, discovery.

Every lab here has its own tag and bridge (``vmsT<hex>``), so it cannot clash with a lab someone runs at the same
time; finalizers remove it even when a test fails, by name if `Lab.down` itself fails.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns
from typer.testing import CliRunner

from tests.integration import labkit
from tests.integration.labkit import lab_objects, sweep
from vmshadow.capture import discover_vmns, find_attached
from vmshadow.capture.budget import CopyBudget
from vmshadow.cli import lab as lab_cli
from vmshadow.domain.errors import InputError
from vmshadow.lab import Lab, LabState, has_route, ping

# unassigned addresses of 198.18.0.0/15, outside the lab's 198.18.0.0/24: the only non-lab targets used here
OUTSIDE_THE_LAB = ("198.19.255.1", "198.18.1.1")


def unique_names() -> tuple[str, str]:
    return labkit.unique_names("t")


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[tuple[Lab, str]]:
    """A lab object (not yet up) with unique names, removed afterwards whatever happened."""
    tag, bridge = unique_names()
    lab = Lab(tag, state_dir=tmp_path)
    try:
        yield lab, bridge
    finally:
        try:
            lab.down(bridge)
        finally:
            sweep(tag, bridge)


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, LabState]]:
    """One lab for the tests that only look at it."""
    tag, bridge = unique_names()
    lab = Lab(tag, state_dir=tmp_path_factory.mktemp("lab"))
    try:
        state = lab.up(2, bridge)
        yield lab, state
    finally:
        try:
            lab.down(bridge)
        finally:
            sweep(tag, bridge)


def test_up_status_down_round_trip_leaves_nothing(fresh_lab: tuple[Lab, str]) -> None:
    lab, bridge = fresh_lab
    state = lab.up(3, bridge)
    assert [h.name for h in state.vmns] == [f"{lab.tag}-vm1", f"{lab.tag}-vm2", f"{lab.tag}-vm3"]
    status = lab.status()
    assert status.up
    report = status.to_json()
    assert report["bridge"] == bridge
    vm1 = next(h for h in report["hosts"] if h["name"] == f"{lab.tag}-vm1")
    assert vm1 == {
        "name": f"{lab.tag}-vm1",
        "role": "vmn",
        "namespace": f"vms-{lab.tag}-vm1",
        "host_interface": f"vmsv-{lab.tag}-vm1",
        "guest_interface": "eth0",
        "shadow_interface": f"vmss-{lab.tag}-vm1",
        "addresses": ["198.18.0.11/24"],
        "mac": "02:00:c6:12:00:01",
        "missing": [],
    }
    outside = {h["name"]: h for h in report["hosts"] if h["role"] == "outside"}
    assert {n: h["addresses"] for n, h in outside.items()} == {
        f"{lab.tag}-dns": ["198.18.0.2/24"],
        f"{lab.tag}-web": ["198.18.0.3/24"],
        f"{lab.tag}-c2": ["198.18.0.4/24"],
    }
    assert all(h["shadow_interface"] is None for h in outside.values())
    # namespaces + host links, 3 shadow ports (a veth pair each), bridge
    assert len(lab_objects(lab.tag, bridge)) == 6 * 2 + 3 * 2 + 1

    teardown = lab.down()
    assert bridge in teardown.links
    assert lab_objects(lab.tag, bridge) == []
    assert not lab.state_file.exists()
    again = lab.down(bridge)
    assert (again.namespaces, again.links) == ((), ())
    assert not lab.status().up


def test_up_is_idempotent_and_completes_a_partial_lab(fresh_lab: tuple[Lab, str]) -> None:
    lab, bridge = fresh_lab
    first = lab.up(2, bridge)
    objects = lab_objects(lab.tag, bridge)
    assert lab.up(2, bridge) == first
    assert lab_objects(lab.tag, bridge) == objects
    assert len(find_attached_for(lab.tag)) == 2

    # break it: one VMN loses its veth pair, an outside host its namespace
    subprocess.run(["ip", "link", "delete", f"vmsv-{lab.tag}-vm2"], check=True, timeout=10)
    subprocess.run(["ip", "netns", "delete", f"vms-{lab.tag}-dns"], check=True, timeout=10)
    status = lab.status()
    assert not status.up
    assert status.missing[f"{lab.tag}-vm2"] == (f"vmsv-{lab.tag}-vm2",)
    assert f"vms-{lab.tag}-dns" in status.missing[f"{lab.tag}-dns"]  # its veth pair goes with it, asynchronously

    lab.up(2, bridge)
    assert lab.status().up
    assert lab_objects(lab.tag, bridge) == objects
    vm1, vm2 = first.vmns
    assert ping(vm1.namespace, str(vm2.address.ip))
    assert ping(vm2.namespace, "198.18.0.2")

    # the lab follows the requested size
    lab.up(3, bridge)
    assert len(lab_objects(lab.tag, bridge)) == len(objects) + 4  # a namespace, a host link, a shadow veth pair
    lab.up(2, bridge)
    assert lab_objects(lab.tag, bridge) == objects


def find_attached_for(tag: str) -> list[str]:
    return [p.vmn for p in find_attached() if p.vmn.startswith(f"{tag}-")]


def test_up_on_another_bridge_is_refused_while_the_lab_is_up(fresh_lab: tuple[Lab, str]) -> None:
    lab, bridge = fresh_lab
    lab.up(1, bridge)
    with pytest.raises(InputError, match="lab down"):
        lab.up(1, bridge + "x")


def test_down_without_the_state_file_removes_the_lab_by_name(fresh_lab: tuple[Lab, str]) -> None:
    lab, bridge = fresh_lab
    lab.up(2, bridge)
    lab.state_file.unlink()
    assert lab.status().leftovers  # the lab's objects are seen without a record
    teardown = lab.down(bridge)
    assert len(teardown.namespaces) == 5
    assert lab_objects(lab.tag, bridge) == []


def test_down_stops_processes_left_in_the_namespaces(fresh_lab: tuple[Lab, str]) -> None:
    lab, bridge = fresh_lab
    state = lab.up(1, bridge)
    sleeper = subprocess.Popen(["ip", "netns", "exec", state.vmns[0].namespace, "sleep", "30"])
    try:
        for _ in range(50):  # bounded: until the namespace shows the process (at most 5 s)
            if netns.ns_pids().get(state.vmns[0].namespace):
                break
            time.sleep(0.1)
        teardown = lab.down()
        assert sleeper.wait(timeout=5) != 0
        assert sleeper.pid in teardown.signalled_pids
        assert lab_objects(lab.tag, bridge) == []
    finally:
        sleeper.kill()
        sleeper.wait(timeout=5)


def test_exec_returns_the_exit_code_of_the_command(shared_lab: tuple[Lab, LabState]) -> None:
    lab, state = shared_lab
    vm1 = state.vmns[0]
    assert lab.exec(vm1.name, ["sh", "-c", "exit 7"]) == 7
    assert lab.exec(vm1.name, ["sh", "-c", "ip -4 -o addr show dev eth0 | grep -q ' 198.18.0.11/24 '"]) == 0
    assert lab.exec(vm1.namespace, ["true"]) == 0  # a namespace name works too
    assert lab.exec(vm1.name, ["sleep", "5"], timeout_s=0.2) == 124
    with pytest.raises(InputError, match="no host"):
        lab.exec("nosuchvm", ["true"])


def test_vmns_reach_each_other_and_the_outside_hosts(shared_lab: tuple[Lab, LabState]) -> None:
    _, state = shared_lab
    vm1, vm2 = state.vmns
    for target in state.hosts:
        if target is not vm1:
            assert ping(vm1.namespace, str(target.address.ip)), target.name
    for outside in state.outside:
        assert ping(outside.namespace, str(vm2.address.ip)), outside.name


def test_lab_traffic_cannot_reach_an_address_outside_the_lab(shared_lab: tuple[Lab, LabState]) -> None:
    _, state = shared_lab
    for host in (state.vmns[0], state.outside[0]):
        for address in OUTSIDE_THE_LAB:
            assert not has_route(host.namespace, address)
            assert not ping(host.namespace, address, timeout_s=1.0)
        with IPRoute(netns=host.namespace, flags=0) as ipr:
            routes = [(r.get_attr("RTA_DST"), r["dst_len"]) for r in ipr.get_routes(table=254)]
        assert routes == [("198.18.0.0", 24)]  # no gateway, no default route
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=state.bridge)
        assert list(ipr.get_addr(index=index)) == []  # no IPv4, and no IPv6 link-local either
    conf = Path("/proc/sys/net/ipv4/conf") / state.bridge
    assert (conf / "forwarding").read_text().strip() == "0"
    assert (conf / "rp_filter").read_text().strip() == "1"


def test_discovery_names_the_bridge_ports_and_learns_guest_macs(
    shared_lab: tuple[Lab, LabState], tmp_path: Path
) -> None:
    _, state = shared_lab
    vm1, vm2 = state.vmns
    for host in state.hosts:  # every guest speaks, so the bridge learns its MAC
        assert ping(host.namespace, str(vm1.address.ip) if host is not vm1 else str(vm2.address.ip))
    found = {v.name: v for v in discover_vmns(state.bridge)}
    assert set(found) == {h.name for h in state.hosts}
    for host in state.hosts:
        assert found[host.name].macs == (host.mac,)
        assert found[host.name].interfaces == (host.host_interface,)

    mapping = tmp_path / "vmns.yaml"
    mapping.write_text(
        f"vmns:\n  frontend: {{interfaces: [{vm1.host_interface}], addresses: [198.18.0.11]}}\n", encoding="utf-8"
    )
    named = {v.name: v for v in discover_vmns(state.bridge, mapping)}
    assert vm1.name not in named
    assert named["frontend"].macs == (vm1.mac,)
    assert [str(a) for a in named["frontend"].addresses] == ["198.18.0.11"]

    with pytest.raises(InputError, match="no bridge"):
        discover_vmns("vmsTnone0")
    with pytest.raises(InputError, match="not a bridge"):
        discover_vmns(vm1.host_interface)


def test_cli_up_status_exec_down(tmp_path: Path) -> None:
    tag, bridge = unique_names()
    runner = CliRunner()
    base = ["--tag", tag, "--state-dir", str(tmp_path)]
    try:
        up = runner.invoke(lab_cli.app, [*base, "up", "--vmns", "1", "--bridge", bridge, "--json"])
        assert up.exit_code == 0, up.output
        assert json.loads(up.stdout)["up"] is True
        status = runner.invoke(lab_cli.app, [*base, "status", "--json"])
        hosts = json.loads(status.stdout)["hosts"]
        assert [(h["name"], h["role"]) for h in hosts] == [
            (f"{tag}-vm1", "vmn"),
            (f"{tag}-dns", "outside"),
            (f"{tag}-web", "outside"),
            (f"{tag}-c2", "outside"),
        ]
        human = runner.invoke(lab_cli.app, [*base, "status"], env={"COLUMNS": "200"})
        assert f"{tag}-vm1" in human.stdout
        assert "198.18.0.11/24" in human.stdout
        assert runner.invoke(lab_cli.app, [*base, "exec", f"{tag}-vm1", "--", "sh", "-c", "exit 5"]).exit_code == 5
        missing = runner.invoke(lab_cli.app, [*base, "exec", "nosuchvm", "--", "true"])
        assert missing.exit_code == 2
        bad = runner.invoke(lab_cli.app, [*base, "up", "--bridge", "br0"])
        assert bad.exit_code == 2
        down = runner.invoke(lab_cli.app, [*base, "down", "--json"])
        assert down.exit_code == 0, down.output
        assert bridge in json.loads(down.stdout)["removed"]["links"]
        assert lab_objects(tag, bridge) == []
    finally:
        Lab(tag, state_dir=tmp_path).down(bridge)
        sweep(tag, bridge)


def test_cli_up_puts_the_asked_copy_budget_in_front_of_each_mirror(tmp_path: Path) -> None:
    tag, bridge = unique_names()
    runner = CliRunner()
    base = ["--tag", tag, "--state-dir", str(tmp_path)]
    try:
        bad = runner.invoke(lab_cli.app, [*base, "up", "--vmns", "1", "--bridge", bridge, "--copy-budget", "fast"])
        assert bad.exit_code == 2
        assert "--copy-budget" in bad.output
        assert lab_objects(tag, bridge) == []  # refused before anything was made
        up = runner.invoke(lab_cli.app, [*base, "up", "--vmns", "2", "--bridge", bridge, "--copy-budget", "200/20"])
        assert up.exit_code == 0, up.output
        budgets = {p.vmn: p.budget for p in find_attached() if p.vmn.startswith(f"{tag}-")}
        assert budgets == {f"{tag}-vm1": CopyBudget(200, 20), f"{tag}-vm2": CopyBudget(200, 20)}
        again = runner.invoke(lab_cli.app, [*base, "up", "--vmns", "2", "--bridge", bridge, "--copy-budget", "off"])
        assert again.exit_code == 0, again.output
        budgets = {p.vmn: p.budget for p in find_attached() if p.vmn.startswith(f"{tag}-")}
        assert budgets == {f"{tag}-vm1": None, f"{tag}-vm2": None}
    finally:
        Lab(tag, state_dir=tmp_path).down(bridge)
        sweep(tag, bridge)
