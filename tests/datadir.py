"""Where the shared test data (captures, feeds, rule sets) lives."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The shared data directory: $VMSHADOW_DATA, else ``<repo>/../shared/data``."""
    configured = os.environ.get("VMSHADOW_DATA")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        how = "VMSHADOW_DATA points to" if configured else "expected it next to the repository at"
        raise FileNotFoundError(f"shared test data is missing: {how} {path}; set VMSHADOW_DATA to the data directory")
    return path
