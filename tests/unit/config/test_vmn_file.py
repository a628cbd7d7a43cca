"""The VMN map file: the vmns section alone, read into a VMNMap."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from vmshadow.config.tmr_file import parse_tmr_text
from vmshadow.config.vmn_file import load_vmn_file, parse_vmn_text
from vmshadow.domain.errors import InputError
from vmshadow.domain.vmn import VMN

VMNS = textwrap.dedent("""\
    version: 1
    vmns:
      vm1: {addresses: [198.18.0.11, "2001:db8::11"], macs: ["02:00:00:00:00:AA"], interfaces: [vnet1]}
      vm2: {addresses: 198.18.0.12}
    """)


def test_a_vmn_map_file_identifies_guests() -> None:
    vmn_map = parse_vmn_text(VMNS, "vmns.yaml")
    assert len(vmn_map) == 2
    assert vmn_map.identify("02:00:00:00:00:aa", None) == "vm1"
    assert vmn_map.identify(None, ipaddress.ip_address("198.18.0.12")) == "vm2"
    assert vmn_map.identify(None, ipaddress.ip_address("2001:db8::11")) == "vm1"
    assert vmn_map.get("vm1") == VMN(
        name="vm1",
        macs=("02:00:00:00:00:aa",),
        addresses=(ipaddress.ip_address("198.18.0.11"), ipaddress.ip_address("2001:db8::11")),
        interfaces=("vnet1",),
    )


def test_the_same_section_in_a_tmr_file_gives_the_same_vmns() -> None:
    assert parse_tmr_text(VMNS, "tmrs.yaml").vmns == parse_vmn_text(VMNS, "vmns.yaml").vmns


@pytest.mark.parametrize("text", ["", "# no guests yet\n", "vmns:\n"])
def test_an_empty_vmn_map(text: str) -> None:
    assert len(parse_vmn_text(text, "vmns.yaml")) == 0


def test_a_vmn_map_file_holds_only_vmns() -> None:
    with pytest.raises(InputError) as caught:
        parse_vmn_text(VMNS + "tmrs: []\n", "vmns.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "vmns.yaml:5: tmrs: unknown key; expected one of: version, vmns",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = textwrap.dedent("""\
        vmns:
          vm1: {addresses: [198.18.0.11], macs: [nope]}
          vm2: {addresses: [198.18.0.11], mac: ["02:00:00:00:00:01"]}
        """)
    with pytest.raises(InputError) as caught:
        parse_vmn_text(text, "vmns.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "vmns.yaml:2: vmns.vm1.macs[0]: 'nope' is not a MAC address; write six hex pairs like 02:00:00:00:00:01",
        "vmns.yaml:3: vmns.vm2.mac: unknown key; did you mean 'macs'?",
        "vmns.yaml:3: vmns.vm2.addresses[0]: address 198.18.0.11 already identifies VMN vm1 (line 2)",
    ]


def test_the_top_level_must_be_a_mapping() -> None:
    with pytest.raises(InputError) as caught:
        parse_vmn_text("- vm1\n", "vmns.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "vmns.yaml:1: the top level must be a mapping with keys version, vmns; found a list",
    ]


def test_load_vmn_file(tmp_path: Path) -> None:
    path = tmp_path / "vmns.yaml"
    path.write_text(VMNS, encoding="utf-8")
    assert len(load_vmn_file(path)) == 2
    path.write_text("vmns: {vm1: {addresses: [x]}}\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_vmn_file(path, source="vmns.yaml")
    assert str(caught.value) == "vmns.yaml:1: vmns.vm1.addresses[0]: 'x' is not an IP address"


@pytest.mark.parametrize(
    ("version", "shown"), [("2", "2"), ("1.0", "a number (1.0)"), ("'1'", "text ('1')"), ("true", "a boolean (true)")]
)
def test_only_format_version_1_is_read(version: str, shown: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_vmn_text(f"version: {version}\n", "vmns.yaml")
    assert (
        str(caught.value) == f"vmns.yaml:1: version: unsupported format version {shown}; this vmshadow reads version 1"
    )
