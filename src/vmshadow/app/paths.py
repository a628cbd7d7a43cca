"""Where the running service keeps its runtime state (cleared at reboot, like the lab and the shadow ports)."""

import json
from pathlib import Path
from typing import Any

RUN_DIR = Path("/run/vmshadow")
DEFAULT_STATUS = RUN_DIR / "status.json"


def write_json_atomically(path: Path, document: Any, *, indent: int | None = None) -> None:
    """`document` as JSON at `path`, through a rename: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=indent))
    tmp.replace(path)
