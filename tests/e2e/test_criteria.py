"""Criteria triggers end to end: a person (or HubSpot's scoring) changes a field in the CRM, the next
sync reads it with the record through the real client, the trigger fires when its condition becomes
true, and the stage's status is written back; the overrides hold it back where they must, and
`explain` says so. Both sandboxes, both databases; nothing of ours is mocked."""

# ruff: noqa: F811  (the fixtures `server` and `clock` come from tests.hubspot_support)
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.config import load_config
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sources.base import Cursor, Page
from connector.store import repo
from tests.e2e.conftest import OpenWorld, run_cli
from tests.hubspot_support import (  # noqa: F401  (server, clock: fixtures)
    T0,
    Connector,
    SandboxClock,
    clock,
    contacts,
    fresh_portal,
    no_wait,
    open_connector,
    server,
    started_sandbox,
    write_config,
)
from tests.salesforce_support import SOURCE, World

SF_MAPPING = """\
stages:
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress}
  - {name: Converted,    category: succeeded, sticky: true}
  - {name: Unresponsive, category: not_succeeded}
statuses:
  Open - Not Contacted: New
  Working - Contacted: Working
  Closed - Converted: Converted
  Closed - Not Converted: Unresponsive
triggers:
  - {name: hot,     on: {field: Lead_Score__c, gte: 50}, from: [New], to: Working}
  - {name: cold,    on: {field: Lead_Score__c, lt: 10}, from: [Working], to: New}
  - {name: partner, on: {field: LeadSource, equals: Partner Referral}, from: [New], to: Converted}
  - {name: no-fit,  on: {field: Rating, in: [Cold]}, from_category: [in_progress, succeeded], to: Unresponsive}
overrides:
  forward_only: true
"""

HS_MAPPING = """\
stages:
  - {name: New,         category: in_progress}
  - {name: Open,        category: in_progress}
  - {name: Attempted,   category: in_progress}
  - {name: Connected,   category: in_progress}
  - {name: In Progress, category: in_progress}
  - {name: Open Deal,   category: succeeded, sticky: true}
  - {name: Bad Timing,  category: not_succeeded}
  - {name: Unqualified, category: not_succeeded}
statuses:
  NEW: New
  OPEN: Open
  ATTEMPTED_TO_CONTACT: Attempted
  CONNECTED: Connected
  IN_PROGRESS: In Progress
  OPEN_DEAL: Open Deal
  BAD_TIMING: Bad Timing
  UNQUALIFIED: Unqualified
triggers:
  - {name: hot,      on: {field: hubspotscore, gt: 40}, from: [New, Open], to: Connected}
  - {name: big,      on: {field: annualrevenue, gte: 1000000}, to: Unqualified, reactivate: true}
  - {name: students, on: {field: jobtitle, equals: student}, from: [Connected], to: Open}
overrides:
  forward_only: true
"""


def _history(world_store: Any, source: str, obj: str, external_id: str) -> list[Any]:
    with world_store.transaction() as session:
        record = repo.get_record(session, source, obj, external_id)
        assert record is not None
        return list(repo.history(session, record.id))


# --- Salesforce ----------------------------------------------------------------------------------
def _sf_world(open_world: OpenWorld, tmp_path: Path, db_url: str) -> World:
    mapping = tmp_path / "lead-criteria.yaml"
    mapping.write_text(SF_MAPPING)
    return open_world(db_url, objects={"Lead": {"status_field": "Status", "mapping": str(mapping)}})


def test_salesforce_a_score_past_the_threshold_moves_the_lead_and_writes_it_back(
    open_world: OpenWorld, tmp_path: Path, db_url: str
) -> None:
    world = _sf_world(open_world, tmp_path, db_url)
    synced = world.synced()
    # The criteria fields are read without being listed in `fields`.
    assert {"Lead_Score__c", "LeadSource", "Rating", "OwnerId"} <= set(synced.read_fields)
    already, ann, cy = world.seed_leads(3, Lead_Score__c=20.0)
    world.sandbox.edit_as_person("Lead", already, Lead_Score__c=75)

    first = world.cycle()  # the baseline: a lead that already met the condition at B does not fire
    assert first.error is None and first.pulled.new == 3 and first.pulled.transitions == 0
    assert first.drained.done == 0

    world.sandbox.edit_as_person("Lead", ann, Lead_Score__c=55)
    moved = world.cycle()
    assert moved.error is None and moved.pulled.transitions == 1 and moved.drained.done == 1
    assert world.sandbox.record("Lead", ann)["Status"] == "Working - Contacted"
    assert world.sandbox.record("Lead", already)["Status"] == "Open - Not Contacted"
    last = _history(world.store, SOURCE, "Lead", ann)[-1]
    assert (last.from_stage, last.to_stage, last.cause, last.rule) == ("New", "Working", "criteria", "hot")
    assert last.detail == "Lead_Score__c 20.0 -> 55.0 (gte 50)"  # Salesforce answers doubles

    # Staying above the threshold fires nothing; our own write-back read back is no change either.
    world.sandbox.edit_as_person("Lead", ann, Lead_Score__c=70)
    quiet = world.cycle()
    assert quiet.pulled.transitions == 0 and quiet.pulled.suppressed == 0 and quiet.drained.claimed == 0

    # Dropping below 10: `cold` would move it back to New; forward_only holds it, and says so once.
    world.sandbox.edit_as_person("Lead", ann, Lead_Score__c=5)
    held = world.cycle()
    assert held.pulled.suppressed == 1 and held.drained.claimed == 0
    world.sandbox.edit_as_person("Lead", ann, Lead_Score__c=4)
    assert world.cycle().pulled.suppressed == 0  # still below: not "becoming" true again

    # A person puts it back to New: rule 1 first. Then the score rises again: `hot` fires again.
    world.sandbox.edit_as_person("Lead", ann, Status="Open - Not Contacted")
    assert world.cycle().pulled.transitions == 1
    world.sandbox.edit_as_person("Lead", ann, Lead_Score__c=65)
    again = world.cycle()
    assert again.pulled.transitions == 1 and again.drained.done == 1
    assert world.sandbox.record("Lead", ann)["Status"] == "Working - Contacted"

    # A status change and a field change in one read: the status first, the criteria from its stage.
    world.sandbox.edit_as_person("Lead", cy, Status="Closed - Converted")
    world.cycle()
    world.sandbox.edit_as_person("Lead", cy, Rating="Cold")
    sticky = world.cycle()
    assert sticky.pulled.suppressed == 1 and sticky.drained.claimed == 0
    assert world.sandbox.record("Lead", cy)["Status"] == "Closed - Converted"

    code, text = run_cli(world.config_path, "explain", SOURCE, "Lead", ann)
    assert code == 0, text
    assert "criteria hot: Lead_Score__c 20.0 -> 55.0 (gte 50)" in text
    assert "NOT MOVED: would move backwards (criteria cold: Lead_Score__c 70.0 -> 5.0 (lt 10))" in text
    assert "criteria hot: Lead_Score__c 4.0 -> 65.0 (gte 50)" in text
    code, text = run_cli(world.config_path, "explain", SOURCE, "Lead", cy, "--json")
    assert code == 0, text
    held_back = [h for h in json.loads(text)["history"] if h["suppressed"]]
    assert [(h["cause"], h["rule"], h["reason"]) for h in held_back] == [
        ("criteria", "no-fit", "external set; sticky")
    ]
    assert held_back[0]["detail"] == "Rating (not set) -> Cold (in [Cold])"


def test_salesforce_a_lead_created_after_the_baseline_fires_at_creation_and_targeted_reads_carry_the_fields(
    open_world: OpenWorld, tmp_path: Path, db_url: str
) -> None:
    world = _sf_world(open_world, tmp_path, db_url)
    world.seed_leads(1)
    assert world.cycle().pulled.new == 1
    world.clock.advance(5)
    (partner,) = world.seed_leads(1, LeadSource="partner referral")  # equals ignores case
    created = world.cycle()
    assert created.pulled.new == 1 and created.pulled.transitions == 1 and created.drained.done == 1
    assert world.sandbox.record("Lead", partner)["Status"] == "Closed - Converted"

    # A targeted read (what the webhook intake does) carries the criteria fields and fires the same way.
    (late,) = world.seed_leads(1, Lead_Score__c=12)
    world.cycle()
    world.sandbox.edit_as_person("Lead", late, Lead_Score__c=90)
    read = world.source.read_statuses("Lead", [late])
    assert read[late].fields["Lead_Score__c"] == 90.0
    stats = world.engine.apply_page(world.synced(), Page(list(read.values()), Cursor()), world.clock.advance(),
                                    save_cursor=False)
    assert stats.transitions == 1
    assert world.drain().done == 1
    assert world.sandbox.record("Lead", late)["Status"] == "Working - Contacted"


def test_salesforce_enroll_existing_fires_on_what_existing_leads_already_meet(
    open_world: OpenWorld, tmp_path: Path
) -> None:
    """`enroll_existing: true` enrols the records existing at B, as a workflow that enrols existing records:
    those meeting a condition at the first sync fire then; without it they do not (the first test)."""
    mapping = tmp_path / "lead-criteria.yaml"
    mapping.write_text(SF_MAPPING + "enroll_existing: true\n")
    world = open_world(None, objects={"Lead": {"status_field": "Status", "mapping": str(mapping)}})
    hot, cold = world.seed_leads(2, Lead_Score__c=20.0)
    world.sandbox.edit_as_person("Lead", hot, Lead_Score__c=80)
    code, out = run_cli(world.config_path, "sync", "--once", "--dry-run", "--json")
    assert code == 0, out
    preview = json.loads(out[out.index("{") :])["objects"][0]
    assert [(m["id"], m["rule"]) for m in preview["moves"] if m["from"] is not None] == [(hot, "hot")]
    assert world.sandbox.writes("Lead") == []
    first = world.cycle()
    assert first.pulled.new == 2 and first.pulled.transitions == 1 and first.drained.done == 1
    assert world.sandbox.record("Lead", hot)["Status"] == "Working - Contacted"
    assert world.sandbox.record("Lead", cold)["Status"] == "Open - Not Contacted"
    assert _history(world.store, SOURCE, "Lead", hot)[-1].detail == "Lead_Score__c (first read) -> 80.0 (gte 50)"


def test_validate_live_checks_the_criteria_fields(open_world: OpenWorld, tmp_path: Path) -> None:
    world = _sf_world(open_world, tmp_path, f"sqlite:///{tmp_path}/v.db")
    code, text = run_cli(world.config_path, "validate", "--live")
    assert code == 0, text
    broken = SF_MAPPING.replace("field: Rating, in: [Cold]", "field: Rating, gte: 3").replace(
        "field: LeadSource, equals: Partner Referral", "field: Lead_Source__c, equals: Partner Referral"
    ).replace("field: Lead_Score__c, lt: 10", "field: Lead_Score__c, lt: 2025-01-01")
    (tmp_path / "lead-criteria.yaml").write_text(broken)
    code, text = run_cli(world.config_path, "validate", "--live")
    assert code == 2, text
    assert "sfdc Lead.Lead_Source__c: criteria trigger 'partner' reads Lead_Source__c, which does not exist" in text
    assert "sfdc Lead.Rating: criteria trigger 'no-fit': 'gte' compares Rating with a number, but it is a picklist" in (
        text
    )
    assert "'lt' compares Lead_Score__c with a date or date-time, but it is a double field" in text
    assert "sfdc Lead.Status: every active value is mapped" in text


# --- HubSpot -------------------------------------------------------------------------------------
@pytest.fixture
def sandbox(server: HubSpotSandbox, clock: SandboxClock) -> Iterator[HubSpotSandbox]:
    fresh_portal(server, clock)
    yield server


def _hub_config(tmp_path: Path, sandbox: HubSpotSandbox, db_url: str) -> Path:
    mapping = tmp_path / "contact-criteria.yaml"
    mapping.write_text(HS_MAPPING)
    objects = {"contacts": f"{{status_field: hs_lead_status, mapping: {mapping}}}"}
    return write_config(tmp_path, sandbox, f'"{db_url}"', objects)


def _last(hub: Connector, external_id: str) -> Any:
    return _history(hub.store, "hubspot", "contacts", external_id)[-1]


def test_hubspot_a_score_past_the_threshold_moves_the_contact_and_writes_it_back(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, db_url: str
) -> None:
    ann, bob, cy = sandbox.seed("contacts", contacts(3, hs_lead_status="NEW"))
    sandbox.recalculate("contacts", ann, hubspotscore=10)
    config = _hub_config(tmp_path, sandbox, db_url)
    assert "hubspotscore" in load_config(config).object("hubspot", "contacts").read_fields
    now = T0 + timedelta(minutes=1)
    with open_connector(config, retry_sleep=no_wait, searches_per_second=0) as hub:
        first = hub.cycle(now)
        assert first.error is None and first.pulled.new == 3 and first.pulled.transitions == 0

        # HubSpot's scoring raises Ann's score past 40: HubSpot gives it as the string "55".
        clock.advance(minutes=1)
        sandbox.recalculate("contacts", ann, hubspotscore=55)
        moved = hub.cycle(now + timedelta(minutes=1))
        assert moved.error is None and moved.pulled.transitions == 1 and moved.drained.done == 1
        assert sandbox.record("contacts", ann)["hs_lead_status"] == "CONNECTED"
        last = _last(hub, ann)
        assert (last.cause, last.rule, last.detail) == ("criteria", "hot", "hubspotscore 10 -> 55 (gt 40)")

        # Still above: nothing. Reading our own write back: nothing.
        clock.advance(minutes=1)
        sandbox.recalculate("contacts", ann, hubspotscore=61)
        quiet = hub.cycle(now + timedelta(minutes=2))
        assert quiet.pulled.transitions == 0 and quiet.pulled.suppressed == 0 and quiet.drained.claimed == 0

        # Backwards (Connected -> Open) is held by forward_only, recorded once.
        clock.advance(minutes=1)
        sandbox.edit_as_person("contacts", ann, jobtitle="Student")
        held = hub.cycle(now + timedelta(minutes=3))
        assert held.pulled.suppressed == 1 and held.drained.claimed == 0
        assert _last(hub, ann).reason == "would move backwards"

        # Below and above again: fires again (after a person put Ann back to Open).
        clock.advance(minutes=1)
        sandbox.recalculate("contacts", ann, hubspotscore=5)
        sandbox.edit_as_person("contacts", ann, hs_lead_status="OPEN")
        hub.cycle(now + timedelta(minutes=4))
        clock.advance(minutes=1)
        sandbox.recalculate("contacts", ann, hubspotscore=48)
        again = hub.cycle(now + timedelta(minutes=5))
        assert again.pulled.transitions == 1 and again.drained.done == 1
        assert sandbox.record("contacts", ann)["hs_lead_status"] == "CONNECTED"

        # Sticky: a person set Bob to Open Deal; revenue passing the bar is held back, and explained.
        clock.advance(minutes=1)
        sandbox.edit_as_person("contacts", bob, hs_lead_status="OPEN_DEAL")
        hub.cycle(now + timedelta(minutes=6))
        clock.advance(minutes=1)
        sandbox.edit_as_person("contacts", bob, annualrevenue=2500000)
        sticky = hub.cycle(now + timedelta(minutes=7))
        assert sticky.pulled.suppressed == 1 and sticky.drained.claimed == 0
        assert sandbox.record("contacts", bob)["hs_lead_status"] == "OPEN_DEAL"

        # A targeted read (the webhook intake's) carries the criteria fields too.
        clock.advance(minutes=1)
        sandbox.edit_as_person("contacts", cy, annualrevenue="1000000")
        read = hub.source.read_statuses("contacts", [cy])
        assert read[cy].fields["annualrevenue"] == "1000000"
        stats = hub.engine.apply_page(hub.synced(), Page(list(read.values()), Cursor()), now + timedelta(minutes=8),
                                      save_cursor=False)
        assert stats.transitions == 1 and hub.record(cy).state.stage == "Unqualified"

    code, text = run_cli(config, "explain", "hubspot", "contacts", bob)
    assert code == 0, text
    assert "NOT MOVED: external set; sticky (criteria big: annualrevenue (not set) -> 2500000 (gte 1000000))" in text
    code, text = run_cli(config, "explain", "hubspot", "contacts", ann, "--json")
    data = json.loads(text)
    assert [h["detail"] for h in data["history"] if h["cause"] == "criteria" and not h["suppressed"]] == [
        "hubspotscore 10 -> 55 (gt 40)", "hubspotscore 5 -> 48 (gt 40)"
    ]


def test_hubspot_validate_live_checks_the_criteria_fields(tmp_path: Path, sandbox: HubSpotSandbox) -> None:
    config = _hub_config(tmp_path, sandbox, f"sqlite:///{tmp_path}/v.db")
    code, text = run_cli(config, "validate", "--live")
    assert code == 0, text
    (tmp_path / "contact-criteria.yaml").write_text(
        HS_MAPPING.replace("field: hubspotscore, gt: 40", "field: hubspot_score, gt: 40").replace(
            "field: jobtitle, equals: student", "field: jobtitle, lte: 2024-01-01"
        )
    )
    code, text = run_cli(config, "validate", "--live")
    assert code == 2, text
    assert "criteria trigger 'hot' reads hubspot_score, which does not exist on contacts" in text
    assert "'lte' compares jobtitle with a date or date-time, but it is a string field" in text
