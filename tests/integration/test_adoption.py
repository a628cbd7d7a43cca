"""A VMN that comes up while the service runs is adopted: shadow port, meter, and a place in the TMRSet in force."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.labkit import metered, send_udp, tagged_lab, wait_for
from vmshadow.app.adoption import Adoption, FollowInForce
from vmshadow.app.tm import TMSettings, apply_tmrset, open_enforcer
from vmshadow.capture import find_attached, shadow_port
from vmshadow.capture.shadow_port import ShadowPort
from vmshadow.domain.flow import Flow
from vmshadow.domain.tmr import TMR, Action, Endpoint, TMRSet
from vmshadow.domain.vmn import VMN
from vmshadow.flows.live import LiveSource
from vmshadow.lab import Lab
from vmshadow.lab.scenarios import outside_host
from vmshadow.lab.state import LabHost, LabState

pytestmark = pytest.mark.slow


def adoption_of(
    lab: LabState,
    lab_dir: Path,
    source: LiveSource,
    held: dict[str, TMRSet],
    tm: TMSettings | None,
    *,
    on_bridge: Callable[[], tuple[list[VMN], bool]] | None = None,
) -> tuple[Adoption, dict[str, ShadowPort]]:
    """The `capture.adopt` duty over the lab as its state file lists it (or `on_bridge`), with the shadow ports
    attached now; `held["tmrset"]` stands for the service's TMRSet."""
    ports = {p.vmn: p for p in find_attached() if p.vmn in {h.name for h in lab.vmns}}

    def recorded() -> tuple[list[VMN], bool]:
        state = Lab(lab.tag, state_dir=lab_dir).state()
        assert state is not None
        return [h.vmn() for h in state.vmns], state.both_directions

    adoption = Adoption(
        on_bridge=on_bridge or recorded,
        attach=lambda vmns, both: [
            (v, shadow_port.attach(v.name, v.interfaces[0], both_directions=both)) for v in vmns
        ],
        source=source,
        ports=ports,
        tmrset=lambda: held["tmrset"],
        set_tmrset=lambda t: held.update(tmrset=t),
        tm=tm,
    )
    return adoption, ports


def wait_metered(source: LiveSource, host: LabHost, to: LabHost, what: str, *, naming_to: bool = False) -> None:
    """Send datagrams from `host` to `to` until `source` yields a flow from `host` (and, `naming_to`, naming `to`
    as its destination VMN), at most 20 s."""
    seen: list[Flow] = []

    def sent_and_seen() -> bool:
        send_udp(host.namespace, str(to.address.ip), range(40000, 40001))
        seen.extend(itertools.islice(source.flows(timeout=0.2), 50))  # ends after 0.2 s without one
        return any(f.src_vmn == host.name and (not naming_to or f.dst_vmn == to.name) for f in seen)

    wait_for(sent_and_seen, timeout_s=20, what=what, detail=lambda: str(source.health))


@contextmanager
def watched_pair(tmp_path: Path, letter: str) -> Iterator[tuple[LabState, Adoption, dict[str, ShadowPort], LiveSource]]:
    """A two-VMN lab, both metered (started), and the adoption duty over it (no TM)."""
    with tagged_lab(tmp_path / "lab", letter=letter) as lab:
        vm1, vm2 = lab.vmns
        source = LiveSource([metered(vm1), metered(vm2)], lab.vmn_map())
        held = {"tmrset": TMRSet(vmns=(vm1.vmn(), vm2.vmn()))}
        adoption, ports = adoption_of(lab, tmp_path / "lab", source, held, None)
        source.start()
        try:
            yield lab, adoption, ports, source
        finally:
            source.stop()


def test_a_vmn_that_comes_up_is_watched_metered_and_known_to_the_tmrs_in_force(tmp_path: Path) -> None:
    with tagged_lab(tmp_path / "lab", letter="a") as lab:
        vm1, vm2 = lab.vmns
        db = f"sqlite:///{tmp_path / 'v.db'}"
        tm = TMSettings(db_url=db, bridges=(lab.bridge,))
        baseline = TMRSet(
            tmrs=(TMR("allow-all", 1000, Endpoint.any(), Endpoint.any(), Action.ALLOW),), vmns=(vm1.vmn(), vm2.vmn())
        )
        first = apply_tmrset(tm, baseline, comment="baseline")
        source = LiveSource([metered(vm1), metered(vm2)], lab.vmn_map())
        held = {"tmrset": baseline}
        lab_dir = tmp_path / "lab"
        adoption, ports = adoption_of(lab, lab_dir, source, held, tm)
        source.start()
        try:
            assert adoption() == [], "nothing new on the bridge"
            grown = Lab(lab.tag, state_dir=lab_dir).up(3, lab.bridge)  # a VM started after the service
            vm3 = grown.vmns[2]
            assert adoption() == [vm3.name]
            assert adoption() == [], "adopted once"
            assert vm3.name in ports
            assert vm3.name in {v.name for v in held["tmrset"].vmns}, "recommenders can name it"

            with open_enforcer(tm) as enforcer:
                current = enforcer.current()
            assert current is not None
            assert current.version == first.version + 1
            assert vm3.name in {v.name for v in current.tmrset.vmns}
            assert current.tmrset.tmrs == baseline.tmrs, "the same TMRs: only the VMN was added"
            # a proposal naming the new VMN can now be put in force
            follow = FollowInForce(tm, lambda t: held.update(tmrset=t), lambda: held["tmrset"].vmns)
            assert follow() == current.version
            deny = TMR("deny-vm3", 10, Endpoint.vmn(vm3.name), Endpoint.vmn(vm1.name), Action.DENY)
            applied = apply_tmrset(tm, current.tmrset.with_tmr(deny), comment="a rule about vm3 (another process)")
            assert follow() == applied.version
            assert "deny-vm3" in {t.id for t in held["tmrset"].tmrs}, "the service reasons about what is in force"

            wait_metered(source, vm3, vm1, "a flow from the adopted VMN's meter")
            # vm1's meter started before vm3 existed: the source names vm3 as the destination all the same
            wait_metered(source, vm1, vm3, "a flow to the adopted VMN, named", naming_to=True)
        finally:
            source.stop()
            with open_enforcer(tm) as enforcer:
                enforcer.remove()


def test_a_vmn_whose_interface_is_made_again_gets_its_mirror_back_and_stays_metered(tmp_path: Path) -> None:
    with watched_pair(tmp_path, "r") as (lab, adoption, ports, source):
        vm1, vm2 = lab.vmns
        assert adoption() == []
        old_index = ports[vm2.name].host_ifindex
        # The VM restarts: its interface goes away and comes back as a new device with the same name, with no tc
        # filters on it (Lab.up puts the mirror back itself, so the new device's clsact is removed).
        subprocess.run(["ip", "link", "del", vm2.host_interface], check=True)
        assert adoption() == [], "a VMN whose interface is missing has nothing to attach to"
        Lab(lab.tag, state_dir=tmp_path / "lab").up(2, lab.bridge)
        subprocess.run(["tc", "qdisc", "del", "dev", vm2.host_interface, "clsact"], check=True)
        assert not [p for p in find_attached() if p.vmn == vm2.name and p.directions], "no mirror feeds vm2"

        assert adoption() == [vm2.name], "re-attached"
        assert adoption() == [], "once"
        assert ports[vm2.name].host_ifindex not in (None, old_index)
        (fed,) = [p for p in find_attached() if p.vmn == vm2.name]
        assert fed.directions
        assert fed.host_ifindex == ports[vm2.name].host_ifindex

        wait_metered(source, vm2, vm1, "a flow from the restarted VMN through its old meter")


def test_a_vmn_on_an_interface_of_a_new_name_is_mirrored_and_managed_there(tmp_path: Path) -> None:
    with tagged_lab(tmp_path / "lab", letter="n") as lab:
        vm1, vm2 = lab.vmns
        tm = TMSettings(db_url=f"sqlite:///{tmp_path / 'v.db'}", bridges=(lab.bridge,))
        baseline = TMRSet(
            tmrs=(TMR("allow-all", 1000, Endpoint.any(), Endpoint.any(), Action.ALLOW),), vmns=(vm1.vmn(), vm2.vmn())
        )
        first = apply_tmrset(tm, baseline, comment="baseline")
        new_name = "vmsx" + vm2.host_interface[4:]  # a lab name too, so `lab down` patterns still cover it
        held = {"tmrset": baseline}
        adoption, ports = adoption_of(
            lab, tmp_path / "lab", LiveSource([], lab.vmn_map()), held, tm,
            on_bridge=lambda: ([vm1.vmn(), replace(vm2.vmn(), interfaces=(new_name,))], False),
        )  # fmt: skip
        subprocess.run(["ip", "link", "set", "dev", vm2.host_interface, "name", new_name], check=True)
        try:
            assert adoption() == [vm2.name]
            assert adoption() == [], "once"
            assert ports[vm2.name].host_interface == new_name
            (fed,) = [p for p in find_attached() if p.vmn == vm2.name]
            assert fed.host_interface == new_name
            assert fed.directions
            assert next(v for v in held["tmrset"].vmns if v.name == vm2.name).interfaces == (new_name,)
            with open_enforcer(tm) as enforcer:
                current = enforcer.current()
                listing = json.dumps(enforcer.listing())
            assert current is not None
            assert current.version == first.version + 1
            assert next(v for v in current.tmrset.vmns if v.name == vm2.name).interfaces == (new_name,)
            assert current.tmrset.tmrs == baseline.tmrs, "the same TMRs: only the VMN's port changed"
            assert new_name in listing, "the bridge table manages the new port"
        finally:
            subprocess.run(["ip", "link", "set", "dev", new_name, "name", vm2.host_interface], check=False)
            with open_enforcer(tm) as enforcer:
                enforcer.remove()


def test_a_vmn_gone_for_its_grace_is_retired_and_adopted_afresh_when_it_comes_back(tmp_path: Path) -> None:
    with watched_pair(tmp_path, "g") as (lab, adoption, ports, source):
        vm1, vm2 = lab.vmns
        adoption.gone_after_s = 0.0
        wait_metered(source, vm2, vm1, "vm2 metered")
        subprocess.run(["ip", "link", "del", vm2.host_interface], check=True)  # the VM is gone

        def retired() -> bool:
            assert adoption() == [], "a gone VMN is neither re-attached nor adopted"
            return vm2.name in adoption.retired

        wait_for(retired, timeout_s=20, what="vm2 retired", detail=lambda: str(adoption.retiring))
        assert vm2.name not in ports
        assert [p.reader for p in source.ports] == [metered(vm1).reader]
        assert set(source.health) == {metered(vm1).reader}
        assert not [p for p in find_attached() if p.vmn == vm2.name], "its shadow port is removed"
        wait_metered(source, vm1, outside_host(lab, "dns"), "vm1 still metered")  # vm2 has no address now

        Lab(lab.tag, state_dir=tmp_path / "lab").up(2, lab.bridge)  # the VM comes back
        assert adoption() == [vm2.name], "adopted afresh"
        wait_metered(source, vm2, vm1, "vm2 metered again")
