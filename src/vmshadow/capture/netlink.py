"""Small netlink helpers shared by shadow ports and the lab: kernel refusals become `BackendUnavailableError`."""

from __future__ import annotations

import errno
import os
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vmshadow.domain.errors import BackendUnavailableError


def kernel_error(what: str, exc: NetlinkError) -> BackendUnavailableError:
    return BackendUnavailableError(f"the kernel refused to {what}: {os.strerror(exc.code)} ({exc.code})")


def find_link(ipr: Any, name: str) -> Any | None:
    """The link called `name`, or None when there is none."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise kernel_error(f"look up {name}", exc) from exc


def link_kind(found: Any) -> str | None:
    kind = found.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return str(kind) if kind is not None else None


def ifname(ipr: Any, index: int) -> str:
    """The name of link `index`, or `#index` when it is gone."""
    try:
        return str(ipr.link("get", index=index)[0].get_attr("IFLA_IFNAME"))
    except NetlinkError:
        return f"#{index}"
