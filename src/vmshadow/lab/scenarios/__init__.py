"""Live lab scenarios for issue 5's evaluation: real tools (nmap, hping3, hydra, iodine, curl) and a benign mix,
driven inside lab namespaces only, each bounded in count and time and stopped cleanly.

A scenario says which finding kind should fire against which VMN (`Expectation`); the harness
(`bench/detection_live.py`, `tests/integration/test_scenarios.py`) runs the SAE on the lab's shadow ports and
times what it finds. Infrastructure like the lab itself: the SAE never imports it. See docs/scenarios.md.
"""

from vmshadow.lab.scenarios.base import Expectation, Scenario, outside_host
from vmshadow.lab.scenarios.beacon import CurlBeacon
from vmshadow.lab.scenarios.benign import BenignMix
from vmshadow.lab.scenarios.brute_force import HydraSSH
from vmshadow.lab.scenarios.dns_tunnel import IodineTunnel
from vmshadow.lab.scenarios.exfiltration import BulkUpload
from vmshadow.lab.scenarios.scans import HpingSynScan, NmapSynScan
from vmshadow.lab.scenarios.services import LabServices

__all__ = [
    "BenignMix",
    "BulkUpload",
    "CurlBeacon",
    "Expectation",
    "HpingSynScan",
    "HydraSSH",
    "IodineTunnel",
    "LabServices",
    "NmapSynScan",
    "Scenario",
    "outside_host",
]
