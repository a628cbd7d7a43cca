"""The lab: VMNs as network namespaces on a Linux bridge, plus outside hosts, for trying vmshadow without VMs.

Infrastructure, like capture/: the SAE, refinement, review and the domain never import it. See docs/lab.md.
"""

from vmshadow.lab.probe import has_route, open_socket, ping
from vmshadow.lab.state import (
    DEFAULT_BRIDGE,
    DEFAULT_STATE_DIR,
    LAB_SUBNET,
    HostRole,
    LabHost,
    LabState,
    plan_lab,
)
from vmshadow.lab.topology import Lab, LabStatus, LabTeardown, lab_exec

__all__ = [
    "DEFAULT_BRIDGE",
    "DEFAULT_STATE_DIR",
    "LAB_SUBNET",
    "HostRole",
    "Lab",
    "LabHost",
    "LabState",
    "LabStatus",
    "LabTeardown",
    "has_route",
    "lab_exec",
    "open_socket",
    "ping",
    "plan_lab",
]
