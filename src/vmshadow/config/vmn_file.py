"""The VMN map file: which guest is behind which addresses, MACs and interfaces.

A VMN map file holds one section, the same ``vmns:`` section a TMR file may hold::

    version: 1                      # optional; the only version is 1
    vmns:
      vm1: {addresses: [198.18.0.11], macs: ["02:00:00:00:00:01"], interfaces: [vnet1]}
      vm2: {addresses: [198.18.0.12, "2001:db8::12"]}

`parse_vmn_text` / `load_vmn_file` read such a file into a `VMNMap`; `read_vmn_section` reads the section for
`vmshadow.config.tmr_file`. Every problem is reported at once with its line; see docs/tmr-format.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from vmshadow.config.yaml_source import FieldReader, Path, describe, load_yaml, read_text
from vmshadow.domain.net import IPAddress
from vmshadow.domain.vmn import VMN, VMNMap

FORMAT_VERSION = 1

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
"""VMN and group names: a letter, then letters, digits, ``_``, ``.`` or ``-``; at most 63 characters.

A name never parses as an IP address or network, so an endpoint is unambiguous."""

RESERVED_NAMES = frozenset({"any"})

VMN_KEYS = ("addresses", "macs", "interfaces")
VMN_FILE_KEYS = ("version", "vmns")

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
_INTERFACE = re.compile(r"^[^\s/:]{1,15}$")


@dataclass(frozen=True, slots=True)
class VMNSection:
    """The VMNs read from a ``vmns:`` section.

    `names` holds every declared name, also those whose definition has errors, so that references to them are
    not reported again as unknown. `complete` is False when the section itself could not be read: then a
    reference to a name outside `names` may be fine and should not be reported.
    """

    vmns: tuple[VMN, ...] = ()
    names: frozenset[str] = frozenset()
    complete: bool = True


def check_name(reader: FieldReader, path: Path, name: str, what: str) -> bool:
    """True when `name` may name a VMN or a group; otherwise reports why not."""
    if name in RESERVED_NAMES:
        reader.report(path, f"{name!r} is reserved and cannot name a {what}")
        return False
    if not NAME_PATTERN.match(name):
        reader.report(
            path,
            f"{name!r} is not a valid {what} name: start with a letter, then use letters, digits, "
            "'_', '.' or '-' (at most 63 characters)",
        )
        return False
    return True


def check_version(reader: FieldReader, root: dict[str, Any]) -> None:
    if "version" not in root:
        return
    version = root["version"]
    if type(version) is not int or version != FORMAT_VERSION:
        shown = str(version) if type(version) is int else describe(version)
        reader.report(("version",), f"unsupported format version {shown}; this vmshadow reads version {FORMAT_VERSION}")


def read_vmn_section(reader: FieldReader, path: Path, value: object) -> VMNSection:
    """Read a ``vmns:`` section (a mapping of name to definition); null or absent means no VMNs."""
    if value is None:
        return VMNSection()
    if not isinstance(value, dict):
        reader.report(path, f"expected a mapping of VMN names to definitions; found {describe(value)}")
        return VMNSection(complete=False)
    vmns: list[VMN] = []
    owners: dict[tuple[str, str], tuple[str, int | None]] = {}
    for name, body in value.items():
        vmn_path = (*path, name)
        valid_name = check_name(reader, vmn_path, name, "VMN")
        vmn = _read_vmn(reader, vmn_path, name, body, owners)
        if vmn is not None and valid_name:
            vmns.append(vmn)
    return VMNSection(tuple(vmns), frozenset(value), complete=True)


def _read_vmn(
    reader: FieldReader,
    path: Path,
    name: str,
    body: object,
    owners: dict[tuple[str, str], tuple[str, int | None]],
) -> VMN | None:
    if body is None or body == {}:
        reader.report(path, "no addresses, macs or interfaces: nothing could identify this VMN")
        return None
    fields = reader.mapping(path, body, VMN_KEYS)
    if fields is None:
        return None
    ok = True
    addresses: list[IPAddress] = []
    macs: list[str] = []
    interfaces: list[str] = []
    for item_path, item in reader.items((*path, "addresses"), fields.get("addresses", [])):
        address = _address(reader, item_path, item)
        if address is None or not _claim(reader, owners, item_path, ("address", str(address)), name):
            ok = False
        elif address not in addresses:
            addresses.append(address)
    for item_path, item in reader.items((*path, "macs"), fields.get("macs", [])):
        mac = _mac(reader, item_path, item)
        if mac is None or not _claim(reader, owners, item_path, ("MAC", mac), name):
            ok = False
        elif mac not in macs:
            macs.append(mac)
    for item_path, item in reader.items((*path, "interfaces"), fields.get("interfaces", [])):
        interface = _interface(reader, item_path, item)
        if interface is None or not _claim(reader, owners, item_path, ("interface", interface), name):
            ok = False
        elif interface not in interfaces:
            interfaces.append(interface)
    misspelt = any(key not in VMN_KEYS for key in fields)  # reported as unknown keys; say nothing more
    if ok and not misspelt and not (addresses or macs or interfaces):
        reader.report(path, "no addresses, macs or interfaces: nothing could identify this VMN")
        return None
    if not ok:
        return None
    return VMN(name=name, macs=tuple(macs), addresses=tuple(addresses), interfaces=tuple(interfaces))


def _claim(
    reader: FieldReader,
    owners: dict[tuple[str, str], tuple[str, int | None]],
    path: Path,
    what: tuple[str, str],
    name: str,
) -> bool:
    """An address, MAC or interface identifies one VMN only."""
    owner = owners.get(what)
    if owner is None:
        owners[what] = (name, reader.line(path))
        return True
    if owner[0] == name:
        return True
    where = f" (line {owner[1]})" if owner[1] is not None else ""
    reader.report(path, f"{what[0]} {what[1]} already identifies VMN {owner[0]}{where}")
    return False


def _address(reader: FieldReader, path: Path, value: object) -> IPAddress | None:
    text = reader.text(path, value)
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        pass
    if "/" in text:
        reader.report(path, f"expected an IP address, not a network ({text})")
    else:
        reader.report(path, f"{text!r} is not an IP address")
    return None


def _mac(reader: FieldReader, path: Path, value: object) -> str | None:
    text = reader.text(path, value)
    if text is None:
        return None
    if not _MAC.match(text):
        reader.report(path, f"{text!r} is not a MAC address; write six hex pairs like 02:00:00:00:00:01")
        return None
    return text.lower()


def _interface(reader: FieldReader, path: Path, value: object) -> str | None:
    text = reader.text(path, value)
    if text is None:
        return None
    if not _INTERFACE.match(text) or text in (".", ".."):
        reader.report(path, f"{text!r} is not an interface name (1-15 characters, no spaces, '/' or ':')")
        return None
    return text


def read_root(reader: FieldReader, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The top-level mapping (empty for an empty file). Anything else stops reading: nothing below it fits."""
    data = reader.document.data
    if data is None:
        return {}
    if not isinstance(data, dict):
        reader.report((), f"the top level must be a mapping with keys {', '.join(allowed)}; found {describe(data)}")
        reader.raise_if_any()
    root = reader.mapping((), data, allowed)
    assert root is not None
    check_version(reader, root)
    return root


def parse_vmn_text(text: str, source: str) -> VMNMap:
    """Read a VMN map file's text; raises `InputError` with every issue, naming `source` as the file."""
    reader = FieldReader(load_yaml(text, source))
    root = read_root(reader, VMN_FILE_KEYS)
    section = read_vmn_section(reader, ("vmns",), root.get("vmns"))
    reader.raise_if_any()
    return VMNMap(section.vmns)


def load_vmn_file(path: str | FilePath, source: str | None = None) -> VMNMap:
    """Read a VMN map file. `source` names the file in errors (default: `path` as given)."""
    name = str(path) if source is None else source
    return parse_vmn_text(read_text(path, name), name)
