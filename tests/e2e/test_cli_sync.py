"""`sync --once` and `resync` through the CLI, against the sandbox CRMs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from tests.e2e.conftest import Crms, run_cli


def stage_of(config: Path, source: str, obj: str, record: str) -> str:
    return str(json.loads(run_cli(config, "explain", source, obj, record, "--json")[1])["stage"])


def test_sync_once_pulls_every_object_and_reports_progress(crms: Crms) -> None:
    sf, hs, config = crms
    sf.seed("Lead", [{"LastName": f"L{i}", "Company": "x", "Status": "Open - Not Contacted"} for i in range(2500)])
    hs.seed("contacts", [{"email": f"{i}@x.io", "hs_lead_status": "NEW"} for i in range(300)])
    code, out = run_cli(config, "sync", "--once")
    assert code == 0, out
    assert "sfdc Lead: 2000 records read" in out and "sfdc Lead: 2500 records read" in out  # a line per page
    # The first sync enters every record at its CRM status: new records, no moves (rule 4).
    assert "sfdc Lead: pulled 2500 (2500 new, 0 moved" in out
    assert "hubspot contacts: pulled 300 (300 new, 0 moved" in out
    code, out = run_cli(config, "sync", "sfdc", "Lead", "--once")
    assert code == 0 and "hubspot" not in out
    assert run_cli(config, "sync", "sfdc", "Laed", "--once")[0] == 2


def test_resync_dry_run_shows_drift_and_changes_nothing_then_repairs_it(crms: Crms) -> None:
    sf, _, config = crms
    clock = sf.clock
    sf.clock = lambda: clock() - timedelta(hours=2)
    leads = sf.seed("Lead", [{"LastName": f"L{i}", "Company": "x", "Status": "Open - Not Contacted"} for i in range(5)])
    sf.clock = clock
    sf.edit_as_person("Lead", leads[0], LastName="moved the cursor")
    assert run_cli(config, "sync", "sfdc", "Lead", "--once")[0] == 0
    # Drift the incremental pull cannot see: a change stamped an hour before the cursor, beyond the
    # settle window (newer than what the store knows of that record, so not a stale read).
    sf.clock = lambda: clock() - timedelta(hours=1)
    sf.edit_as_person("Lead", leads[2], Status="Working - Contacted")
    sf.clock = clock
    assert ", 0 moved" in run_cli(config, "sync", "sfdc", "Lead", "--once")[1]  # the pull does not see it
    code, preview = run_cli(config, "resync", "sfdc", "Lead", "--dry-run")
    assert code == 0, preview
    assert f"{leads[2]}: New -> Working" in preview and "would change 1" in preview
    assert stage_of(config, "sfdc", "Lead", leads[2]) == "New"  # nothing changed
    code, out = run_cli(config, "resync", "sfdc", "Lead", "--full")
    assert code == 0 and "repaired 1" in out
    assert stage_of(config, "sfdc", "Lead", leads[2]) == "Working"
    # The dry run printed exactly what the real run then did.
    assert [line for line in preview.splitlines() if line.startswith("  ")] == [
        line for line in out.splitlines() if line.startswith("  ")
    ]


def test_resync_push_writes_our_stage_where_the_crm_differs(crms: Crms) -> None:
    sf, _, config = crms
    leads = sf.seed("Lead", [{"LastName": f"L{i}", "Company": "x", "Status": "Open - Not Contacted"} for i in range(3)])
    assert run_cli(config, "sync", "sfdc", "Lead", "--once")[0] == 0
    assert run_cli(config, "stage", "set", "sfdc", "Lead", leads[0], "Working")[0] == 0
    code, out = run_cli(config, "resync", "sfdc", "Lead", "--push", "--ids", leads[0])
    assert code == 0 and "pushed" in out
    assert run_cli(config, "sync", "sfdc", "Lead", "--once")[0] == 0
    assert sf.record("Lead", leads[0])["Status"] == "Working - Contacted"


def test_resync_remap_previews_then_applies_a_mapping_change(crms: Crms) -> None:
    sf, _, config = crms
    leads = sf.seed("Lead", [{"LastName": f"L{i}", "Company": "x", "Status": "Open - Not Contacted"} for i in range(3)])
    assert run_cli(config, "sync", "sfdc", "Lead", "--once")[0] == 0
    mapping = config.parent / "mappings" / "salesforce-lead.yaml"
    text = mapping.read_text()
    # RevOps decide that a lead not yet contacted already counts as Working (and the reverse).
    text = text.replace("Open - Not Contacted: New", "Open - Not Contacted: WORKING").replace(
        "Working - Contacted: Working", "Working - Contacted: New"
    )
    mapping.write_text(text.replace("WORKING", "Working"))
    code, out = run_cli(config, "resync", "sfdc", "Lead", "--remap", "--dry-run")
    assert code == 0, out
    assert out.count("New -> Working") == 3 and "would change 3" in out
    assert stage_of(config, "sfdc", "Lead", leads[0]) == "New"  # nothing changed
    code, out = run_cli(config, "resync", "sfdc", "Lead", "--remap")
    assert code == 0 and "repaired 3" in out
    assert [stage_of(config, "sfdc", "Lead", lead) for lead in leads] == ["Working"] * 3
    assert sf.writes("Lead") == []  # a remap follows the CRM; it writes nothing back
