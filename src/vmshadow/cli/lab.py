"""`vmshadow lab`: VMNs as network namespaces on a bridge, with shadow ports, for trying vmshadow without VMs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from vmshadow.capture.budget import CopyBudget
from vmshadow.cli.copy_budget import COPY_BUDGET_HELP, DEFAULT_COPY_BUDGET
from vmshadow.cli.output import console, fail, print_json
from vmshadow.domain.errors import VmshadowError
from vmshadow.lab.state import DEFAULT_BRIDGE, DEFAULT_STATE_DIR, LabState
from vmshadow.lab.topology import Lab, LabStatus

app = typer.Typer(
    help="The lab: VMNs as network namespaces on a Linux bridge plus outside hosts (dns, web, c2); needs root.",
    no_args_is_help=True,
)


@app.callback()
def lab(
    ctx: typer.Context,
    tag: Annotated[str, typer.Option(help="Run a separate lab whose names carry this tag (e.g. t1).")] = "",
    state_dir: Annotated[Path, typer.Option(help="Where the lab's record is kept.")] = DEFAULT_STATE_DIR,
) -> None:
    """Build, inspect and remove the lab (docs/lab.md)."""
    try:
        ctx.obj = Lab(tag, state_dir=state_dir)
    except VmshadowError as exc:
        fail(exc)


@app.command()
def up(
    ctx: typer.Context,
    vmns: Annotated[int, typer.Option("--vmns", help="Number of VMNs (vm1..vmN).")] = 2,
    bridge: Annotated[str, typer.Option(help="Bridge name; must start with 'vms'.")] = DEFAULT_BRIDGE,
    both_directions: Annotated[
        bool, typer.Option("--both-directions", help="Shadow ports also copy what each VMN receives.")
    ] = False,
    snaplen: Annotated[int | None, typer.Option(help="Snap length recorded for shadow port readers.")] = None,
    copy_budget: Annotated[str, typer.Option("--copy-budget", help=COPY_BUDGET_HELP)] = DEFAULT_COPY_BUDGET,
    as_json: Annotated[bool, typer.Option("--json", help="Print the lab as JSON.")] = False,
) -> None:
    """Build the lab, or complete a partial one (running it again changes nothing)."""
    lab: Lab = ctx.obj
    try:
        budget = CopyBudget.parse(copy_budget, field="--copy-budget")
        lab.up(vmns, bridge, both_directions=both_directions, snaplen=snaplen, copy_budget=budget)
        status = lab.status()
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(status.to_json())
        return
    _print_status(status)


@app.command()
def down(
    ctx: typer.Context,
    bridge: Annotated[
        str | None, typer.Option(help="Bridge to remove when the lab's record is lost (default: vmsbr0).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was removed as JSON.")] = False,
) -> None:
    """Remove the lab: namespaces, links, shadow ports, bridge (running it again changes nothing)."""
    lab: Lab = ctx.obj
    try:
        teardown = lab.down(bridge)
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(teardown.to_json())
        return
    removed = len(teardown.namespaces) + len(teardown.links)
    if not removed:
        console.print("nothing to remove")
    else:
        console.print(f"removed {len(teardown.namespaces)} namespaces and {len(teardown.links)} links")
    for item in teardown.kept:
        console.print(f"[yellow]kept[/] {item}", highlight=False)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the lab as JSON.")] = False,
) -> None:
    """Show each VMN and outside host with its namespace, interfaces, shadow port, address and MAC."""
    lab: Lab = ctx.obj
    try:
        result = lab.status()
    except VmshadowError as exc:
        fail(exc)
    if as_json:
        print_json(result.to_json())
        return
    _print_status(result)


@app.command(
    name="exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_(
    ctx: typer.Context,
    vmn: Annotated[str, typer.Argument(help="VMN or outside host (e.g. vm1, dns).")],
    command: Annotated[list[str], typer.Argument(help="Command to run, after `--`.")],
) -> None:
    """Run a command in a VMN's (or outside host's) namespace; exits with the command's exit code."""
    lab: Lab = ctx.obj
    try:
        code = lab.exec(vmn, command)
    except VmshadowError as exc:
        fail(exc)
    raise typer.Exit(code)


def _print_status(status: LabStatus) -> None:
    state: LabState | None = status.state
    if state is None:
        console.print("no lab is up")
        if status.leftovers:
            console.print(f"[yellow]leftovers[/] (remove with `vmshadow lab down`): {', '.join(status.leftovers)}")
        return
    headline = "[green]up[/]" if status.up else "[red]incomplete[/] (run `vmshadow lab up` again)"
    console.print(f"lab {headline} on bridge {state.bridge}", highlight=False)
    vmns = _table("VMN", "namespace", "host interface", "shadow port", "address", "MAC")
    for host in state.vmns:
        vmns.add_row(
            host.name, host.namespace, host.host_interface, host.shadow_interface or "-", str(host.address), host.mac
        )
    outside = _table("outside host", "namespace", "host interface", "address", "MAC")
    for host in state.outside:
        outside.add_row(host.name, host.namespace, host.host_interface, str(host.address), host.mac)
    console.print(vmns)
    console.print(outside)
    for name, missing in status.missing.items():
        if missing:
            console.print(f"[red]missing[/] for {name}: {', '.join(missing)}", highlight=False)


def _table(*headers: str) -> Table:
    table = Table(box=box.SIMPLE, pad_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")  # a narrow terminal wraps a name; it never hides part of one
    return table
