"""`vmshadow run` and the copy budget: by default a restart keeps what the kernel has; asked for, it changes it."""

from __future__ import annotations

from pathlib import Path

from tests.integration import labkit
from tests.integration.labkit import sweep
from tests.integration.test_export_wiring import vmshadow
from vmshadow.app.service import ServiceOptions, watched_vmns
from vmshadow.capture import find_attached
from vmshadow.capture.budget import CopyBudget
from vmshadow.capture.shadow_port import DEFAULT_BUDGET
from vmshadow.lab import Lab


def budgets(tag: str) -> dict[str, CopyBudget | None]:
    return {p.vmn: p.budget for p in find_attached() if p.vmn.startswith(f"{tag}-")}


def test_a_run_keeps_each_ports_budget_unless_asked_and_new_ports_get_the_default(tmp_path: Path) -> None:
    tag, bridge = labkit.unique_names("b")
    lab = Lab(tag, state_dir=tmp_path)
    try:
        lab.up(2, bridge, copy_budget=CopyBudget(200, 20))
        options = ServiceOptions(db_url=f"sqlite:///{tmp_path / 'v.db'}", bridge=bridge)
        watched = {w.vmn.name: w.port.budget for w in watched_vmns(options)}
        vms = {f"{tag}-vm1", f"{tag}-vm2"}
        # the VMNs keep lab up's budget; the outside hosts had no shadow port and get the default
        assert {n: b for n, b in watched.items() if n in vms} == dict.fromkeys(vms, CopyBudget(200, 20))
        assert {b for n, b in watched.items() if n not in vms} == {DEFAULT_BUDGET}
        assert budgets(tag) == watched  # as the kernel has it, not only as the service believes

        watched_vmns(ServiceOptions(db_url=options.db_url, bridge=bridge, copy_budget=None))
        assert set(budgets(tag).values()) == {None}
    finally:
        try:
            lab.down(bridge)
        finally:
            sweep(tag, bridge)


def test_run_refuses_a_bad_budget_before_it_watches_anything(tmp_path: Path) -> None:
    result = vmshadow("run", "--copy-budget", "10/x", "--db", tmp_path / "v.db", "--status", tmp_path / "s.json")
    assert result.returncode == 2
    assert "--copy-budget" in result.stderr + result.stdout
    assert not (tmp_path / "s.json").exists()
