"""Day one at a real org: the first sync of months of history moves nothing and writes nothing (rule 4).

Both sandboxes are seeded as an org that has been in use for months: records last modified 90 days
ago, activity logged 60 days ago. The mappings have `inactive` triggers (14 and 21 days) and activity
triggers that the old activity would fire. The connector must take that org as its baseline: rules act
on what happens from the first sync on. With `enroll_existing: true` the clocks start from the CRM's
own dates instead, and `sync --once --dry-run` shows what that first cycle would do before anyone
commits to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox
from tests.e2e.conftest import Crms, run_cli

DAY = timedelta(days=1)
WORKING, ATTEMPTED = "Working - Contacted", "ATTEMPTED_TO_CONTACT"


def _at(offset: timedelta) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + offset


def seed_old_org(sf: SalesforceSandbox, hs: HubSpotSandbox) -> tuple[list[str], list[str], list[str], list[str]]:
    """Leads and contacts last touched 90 days ago; replies and calls logged 60 days ago."""
    sf.clock = hs.clock = _at(-90 * DAY)
    working = sf.seed("Lead", [{"LastName": f"W{i}", "Company": "x", "Status": WORKING} for i in range(40)])
    new = sf.seed("Lead", [{"LastName": f"N{i}", "Company": "x", "Status": "Open - Not Contacted"} for i in range(10)])
    attempted = hs.seed("contacts", [{"email": f"a{i}@x.io", "hs_lead_status": ATTEMPTED} for i in range(30)])
    fresh = hs.seed("contacts", [{"email": f"n{i}@x.io", "hs_lead_status": "NEW"} for i in range(10)])
    sf.clock = hs.clock = _at(-60 * DAY)
    sixty_days_ago = (datetime.now(UTC) - 60 * DAY).date().isoformat()
    sf.seed("Task", [{"Subject": "RE: pricing", "WhoId": lead, "ActivityDate": sixty_days_ago} for lead in new])
    for contact in fresh:
        hs.add_engagement("calls", contact, {"hs_call_title": "intro"}, at=datetime.now(UTC) - 60 * DAY)
    sf.clock = hs.clock = _at(timedelta(0))
    return working, new, attempted, fresh


def explain(config: Path, source: str, obj: str, record: str) -> dict[str, object]:
    code, out = run_cli(config, "explain", source, obj, record, "--json")
    assert code == 0, out
    data: dict[str, object] = json.loads(out)
    return data


def test_the_first_sync_of_an_old_org_moves_nothing_and_writes_nothing(crms: Crms) -> None:
    sf, hs, config = crms
    working, new, attempted, fresh = seed_old_org(sf, hs)
    before = datetime.now(UTC)
    code, out = run_cli(config, "sync", "--once", "--json")
    assert code == 0, out
    summary = {(o["source"], o["object"]): o for o in json.loads(out[out.index("{") :])["objects"]}
    assert summary[("sfdc", "Lead")]["pulled"] == 50 and summary[("hubspot", "contacts")]["pulled"] == 40
    assert all(o["written"] == 0 and o["error"] is None for o in summary.values())
    assert sf.writes("Lead") == [] and hs.writes("contacts") == []
    # The stage clock starts at the baseline (this first sync), not at the CRM's modified date.
    lead = explain(config, "sfdc", "Lead", working[0])
    assert lead["stage"] == "Working" and lead["set_by"] == "external"
    history = lead["history"]
    assert isinstance(history, list) and [(h["from"], h["to"]) for h in history] == [(None, "Working")]
    assert datetime.fromisoformat(str(history[0]["at"])) >= before - timedelta(seconds=5)
    # Old replies and calls count as activity and moved nobody.
    assert explain(config, "sfdc", "Lead", new[0])["stage"] == "New"
    assert explain(config, "hubspot", "contacts", fresh[0])["stage"] == "New"

    # Two weeks and a day after the baseline, the quiet Working leads go Unresponsive (14 days) and
    # are written back; the contacts (21 days) not yet.
    code, out = run_cli(config, "sync", "--once", "--now", (datetime.now(UTC) + 15 * DAY).isoformat())
    assert code == 0, out
    assert len(sf.writes("Lead")) == len(working)
    assert {w[1]["Status"] for w in sf.writes("Lead")} == {"Closed - Not Converted"}
    assert hs.writes("contacts") == []
    # Activity that happens after the baseline moves records as usual.
    sf.seed("Task", [{"Subject": "RE: pricing", "WhoId": new[1], "ActivityDate": datetime.now(UTC).date().isoformat()}])
    assert run_cli(config, "sync", "sfdc", "Lead", "--once")[0] == 0
    assert explain(config, "sfdc", "Lead", new[1])["stage"] == "Working"
    assert explain(config, "sfdc", "Lead", new[0])["stage"] == "New"
    assert attempted  # seeded for the next test's shape; untouched here


def test_enroll_existing_previews_with_a_dry_run_then_does_exactly_that(crms: Crms) -> None:
    sf, hs, config = crms
    working, _, attempted, _ = seed_old_org(sf, hs)
    for name in ("salesforce-lead.yaml", "hubspot-contact.yaml"):
        mapping = config.parent / "mappings" / name
        mapping.write_text(mapping.read_text() + "enroll_existing: true\n")
    code, out = run_cli(config, "sync", "--once", "--dry-run", "--json")
    assert code == 0, out
    preview = {(o["source"], o["object"]): o for o in json.loads(out[out.index("{") :])["objects"]}
    lead_moves = [m for m in preview[("sfdc", "Lead")]["moves"] if m["from"] is not None]
    contact_moves = [m for m in preview[("hubspot", "contacts")]["moves"] if m["from"] is not None]
    # Their clocks ran from the CRM's modified date 90 days ago: every quiet record times out now.
    assert sorted(m["id"] for m in lead_moves) == sorted(working)
    assert {(m["from"], m["to"], m["rule"]) for m in lead_moves} == {("Working", "Unresponsive", "gone-quiet")}
    assert sorted(m["id"] for m in contact_moves) == sorted(attempted)
    assert len(preview[("sfdc", "Lead")]["writes"]) == len(working)
    assert len(preview[("hubspot", "contacts")]["writes"]) == len(attempted)
    # Nothing changed anywhere: no record in the store, no write in either CRM.
    assert sf.writes("Lead") == [] and hs.writes("contacts") == []
    assert run_cli(config, "explain", "sfdc", "Lead", working[0])[0] == 2
    code, text = run_cli(config, "sync", "--once", "--dry-run")
    assert code == 0 and f"move {working[0]}: Working -> Unresponsive (trigger 'gone-quiet'" in text
    assert "nothing was changed" in text

    code, out = run_cli(config, "sync", "--once", "--json")
    assert code == 0, out
    real = {(o["source"], o["object"]): o for o in json.loads(out[out.index("{") :])["objects"]}
    for key, shown in preview.items():
        assert real[key]["written"] == len(shown["writes"])
    assert sorted(w[0] for w in sf.writes("Lead")) == sorted(w["id"] for w in preview[("sfdc", "Lead")]["writes"])
    assert explain(config, "sfdc", "Lead", working[0])["stage"] == "Unresponsive"
