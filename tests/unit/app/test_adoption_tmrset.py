"""How adoption changes the TMRSet: new VMNs are added, moved VMNs change only their interfaces."""

from __future__ import annotations

import ipaddress

from vmshadow.app.adoption import knowing, on_interfaces
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.domain.vmn import VMN

VM1 = VMN("vm1", macs=("02:00:00:00:00:01",), addresses=(ipaddress.ip_address("198.18.0.11"),), interfaces=("vnet0",))
VM2 = VMN("vm2", macs=("02:00:00:00:00:02",), interfaces=("vnet1",))
RULES = TMRSet(tmrs=(TMR("deny-vm1", 10, Endpoint.vmn("vm1"), Endpoint.any(), Action.DENY),), vmns=(VM1, VM2))


def test_a_moved_vmn_keeps_its_definition_but_its_interfaces() -> None:
    moved = on_interfaces(RULES, [VMN("vm1", interfaces=("vnet7",))])
    assert moved.vmns == (VMN("vm1", VM1.macs, VM1.addresses, ("vnet7",)), VM2)
    assert moved.tmrs == RULES.tmrs


def test_nothing_moved_is_the_same_tmrset() -> None:
    assert on_interfaces(RULES, [VM1, VMN("vm2", interfaces=("vnet1",))]) is RULES
    assert on_interfaces(RULES, [VMN("vm2")]) is RULES, "a VMN seen with no interface is left as it is"
    assert on_interfaces(RULES, [VMN("vm9", interfaces=("vnet9",))]) is RULES, "only VMNs it defines move"


def test_knowing_adds_only_vmns_it_does_not_define() -> None:
    vm3 = VMN("vm3", interfaces=("vnet2",))
    wider = knowing(RULES, [VMN("vm1", interfaces=("other",)), vm3])
    assert wider.vmns == (VM1, VM2, vm3)
    assert knowing(RULES, [VM1]) is RULES
