"""Intel through the CLI: import with retro-hunt over archived flows, all-or-nothing, sources, expiry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner, Result

from tests.datadir import REPO_ROOT, shared_data
from vmshadow.cli.main import app

RULES = REPO_ROOT / "examples" / "tmrs.yaml"


def vmshadow(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_an_indicator_arriving_later_finds_past_contacts(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    # the archive: a capture analysed before anyone knew its destination was bad
    archived = vmshadow("analyze", shared_data() / "ndpi/pcap/synscan.pcap", "--rules", RULES, "--db", db, "--json")
    assert archived.exit_code == 0, archived.stderr
    assert not [f for f in json.loads(archived.stdout)["findings"] if f["kind"] == "intel_match"]
    listed = tmp_path / "late.txt"
    listed.write_text("64.13.134.52\n")
    # the capture is from 2010: a window reaching back that far finds it, marked as a retro-hunt
    imported = vmshadow("intel", "import", listed, "--db", db, "--hunt-hours", str(24 * 365 * 20), "--json")
    assert imported.exit_code == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["stored"] == 1
    hunt = report["retro_hunt"]
    assert hunt["flows_checked"] == 1994
    assert hunt["findings"]
    assert all(f["measured"]["retro_hunt"] == 1 and f["summary"].startswith("retro-hunt") for f in hunt["findings"])
    assert hunt["proposals"] == [], "contacts from 2010 are not ongoing: no proposal"
    sources = json.loads(vmshadow("intel", "sources", "--db", db, "--json").stdout)
    assert sources == {"late.txt": {"stored": 1, "valid": 1}}


def test_a_stix_bundle_with_an_error_is_refused_whole_unless_partial(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    poison = next(p for p in (shared_data() / "intel/stix2-oasis").iterdir() if "poison" in p.name.lower())
    copy = tmp_path / poison.name
    shutil.copy(poison, copy)
    refused = vmshadow("intel", "import", copy, "--db", db)
    assert refused.exit_code == 2
    assert "objects[42]" in refused.stderr  # the malformed domain in the sample (docs/intel.md)
    assert json.loads(vmshadow("intel", "list", "--db", db, "--json").stdout) == []
    kept = vmshadow("intel", "import", copy, "--db", db, "--partial", "--json")
    assert kept.exit_code == 0, kept.stderr
    assert json.loads(kept.stdout)["stored"] == 42  # 64 observables, 42 distinct (docs/intel.md)
    assert len(json.loads(kept.stdout)["errors"]) == 1
