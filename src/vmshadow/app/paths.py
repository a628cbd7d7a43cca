"""Where the running service keeps its runtime state (cleared at reboot, like the lab and the shadow ports)."""

from pathlib import Path

RUN_DIR = Path("/run/vmshadow")
DEFAULT_STATUS = RUN_DIR / "status.json"
