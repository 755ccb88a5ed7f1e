"""The Salesforce source against an org that behaves like a real one: late commits, months of history,
field history, Events and Shared Activities, merges, permissions, My Domain logins, configuration
faults on write and answers that are not JSON. simple-salesforce over TLS against the sandbox;
nothing of ours is mocked."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import ClientCredentialsAuth, JwtAuth, SalesforceSource, load_config
from connector.errors import ConfigError
from connector.explain import explain
from connector.sources.base import Cursor, RemoteEvent, StatusWrite
from connector.sources.errors import Action, CrmError
from connector.sources.salesforce import Salesforce
from tests.e2e.conftest import OpenWorld
from tests.salesforce_support import OBJECTS, SOURCE, World

WORKING, NEW = "Working - Contacted", "Open - Not Contacted"
CLOSED_LOST = "Closed - Not Converted"



def transitions(world: World, record_id: str, obj: str = "Lead") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = explain(world.engine, world.synced(obj), record_id)["history"]
    return [e for e in entries if not e.get("suppressed")]


def stage(world: World, record_id: str, obj: str = "Lead") -> Any:
    return explain(world.engine, world.synced(obj), record_id)["stage"]


def query_calls(world: World, sobject: str) -> list[Any]:
    """Query calls (first pages) whose SOQL reads `sobject`, from the sandbox's call log."""
    return [c for c in world.sandbox.server.calls() if c.path.endswith(("/query/", "/queryAll/", "/query", "/queryAll"))
            and sobject in getattr(c, "path", "")]


def events(world: World, obj: str = "Lead") -> list[RemoteEvent]:
    pages = world.source.pull_events(obj, Cursor(), until=world.clock.now)
    return [e for page in pages for e in page.events]


# --- late commits and the settle window ------------------------------------------------------------
def test_a_late_commit_behind_newer_records_is_pulled_next_cycle_exactly_once(world: World, db_url: str) -> None:
    late, early = world.seed_leads(2)
    world.cycle()
    world.clock.advance(30)
    stamped = world.clock.now
    world.late_edit(5, "Lead", late, Status=WORKING)  # stamped now, committed 5 s later
    world.clock.advance(1)
    world.sandbox.edit_as_person("Lead", early, Status=CLOSED_LOST)  # newer, and visible at once

    outcome = world.cycle()
    assert outcome.error is None and outcome.pulled.transitions == 1
    assert (stage(world, late), stage(world, early)) == ("New", "Unresponsive")
    # A read by Id is the same database: it sees the record as it was, too.
    assert world.source.read_statuses("Lead", [late])[late].status == NEW
    assert world.engine.cursor(world.synced()).modified_at == stamped + timedelta(seconds=1)

    world.clock.advance(5)  # the long transaction commits, with its old stamp
    outcome = world.cycle()
    assert outcome.pulled.transitions == 1
    assert stage(world, late) == "Working"
    moved = [t for t in transitions(world, late) if t["to"] == "Working"]
    assert len(moved) == 1 and moved[0]["cause"] == "external"
    assert world.source.read_statuses("Lead", [late])[late].modified_at == stamped

    for _ in range(3):  # read again while it is inside the settle window, then no more: never twice
        assert world.cycle(seconds=5).pulled.transitions == 0
    assert len([t for t in transitions(world, late) if t["to"] == "Working"]) == 1
    assert not world.sandbox.writes()


def test_a_locked_row_refuses_writes_until_its_transaction_commits(world: World) -> None:
    (lead,) = world.seed_leads(1)
    world.late_edit(10, "Lead", lead, Status=CLOSED_LOST)
    (outcome,) = world.source.write_statuses("Lead", [StatusWrite(lead, WORKING)])
    assert outcome.error is not None and outcome.error.code == "UNABLE_TO_LOCK_ROW"
    assert outcome.error.action is Action.RETRY
    world.clock.advance(11)
    (outcome,) = world.source.write_statuses("Lead", [StatusWrite(lead, WORKING)])
    assert outcome.ok


def test_a_persons_edit_still_committing_is_never_overwritten(open_world: OpenWorld, db_url: str) -> None:
    """The person saved first, but their transaction commits late: our write waits on the row lock,
    and once the edit is visible the conflict check sees it and drops our write."""
    world = open_world(db_url)
    (lead,) = world.seed_leads(1)
    world.cycle()
    world.engine.feed_event(world.synced(), lead, "email_replied", world.clock.now, world.clock.now)
    world.late_edit(30, "Lead", lead, Status=CLOSED_LOST)

    assert world.drain().retried == 1  # UNABLE_TO_LOCK_ROW: the person's transaction holds the row
    assert world.sandbox.writes() == []
    world.clock.advance(3600)
    stats = world.drain()
    assert (stats.conflicts, stats.done) == (1, 0)
    assert world.sandbox.writes() == []
    assert world.sandbox.record("Lead", lead)["Status"] == CLOSED_LOST
    assert stage(world, lead) == "Unresponsive"
    outcome = world.cycle()
    assert outcome.pulled.transitions == 0 and world.sandbox.writes() == []


def test_a_pull_a_minute_after_a_bulk_load_reads_nothing_again(world: World) -> None:
    world.seed_leads(5_000)  # all in one second, as a data load stamps them
    assert world.cycle().pulled.records == 5_000
    world.clock.advance(60)
    world.sandbox.server.reset_calls()
    outcome = world.cycle()
    assert outcome.error is None and outcome.pulled.records == 0
    reads = [c for c in world.sandbox.server.calls() if "/queryAll" in c.path]
    assert [c.records for c in reads] == [0]  # one query, one empty page: no re-read storm


def test_late_activity_is_read_once(world: World) -> None:
    (lead,) = world.seed_leads(1)
    world.cycle()
    world.clock.advance(30)
    with world.sandbox.long_transaction(4):
        world.sandbox.log_activity("Task", who=[lead], Subject="Intro call", Type="Call")
    world.clock.advance(1)
    world.sandbox.log_activity("Task", who=[lead], Subject="Note", Type="Other")  # newer, matches nothing
    assert world.cycle().events.new == 0
    world.clock.advance(4)
    assert world.cycle().events.new == 1
    assert stage(world, lead) == "Working"
    assert world.cycle(seconds=3).events.new == 0


# --- what a read carries -----------------------------------------------------------------------------
def test_reads_carry_created_date_and_merges(world: World) -> None:
    winner, loser = world.seed_leads(2)
    created = world.clock.now
    world.clock.advance(3600)
    world.sandbox.merge("Lead", winner, loser)
    records = {r.id: r for p in world.source.pull("Lead", Cursor(), until=world.clock.now) for r in p.records}
    assert records[winner].created_at == created and records[loser].created_at == created
    assert records[loser].deleted and records[loser].merged_into == winner
    assert not records[winner].deleted and records[winner].merged_into is None


def test_status_changed_at_comes_from_field_history(open_world: OpenWorld) -> None:
    project = {"status_field": "Status__c", "mapping": OBJECTS["Lead"]["mapping"]}
    world = open_world(objects={**OBJECTS, "Project__c": project})
    sandbox = world.sandbox
    sandbox.define_object("Project__c", {"Status__c": [NEW, WORKING, CLOSED_LOST, "Closed - Converted"]})
    ids = world.seed_leads(650)
    assert world.source.status_changed_at("Lead", ids) == {}  # tracking off: no rows yet
    sandbox.track_history("Lead", "Status")
    first, second = ids[0], ids[649]
    sandbox.edit_as_person("Lead", first, Status=WORKING)
    world.clock.advance(60)
    sandbox.edit_as_person("Lead", first, Status=CLOSED_LOST)
    sandbox.edit_as_person("Lead", second, Status=WORKING)
    sandbox.edit_as_person("Lead", ids[5], LastName="Renamed")  # not the status: no row
    world.clock.advance(60)
    sandbox.server.reset_calls()
    found = world.source.status_changed_at("Lead", [*ids, first[:15]])
    assert found == {first: world.clock.now - timedelta(seconds=60), second: world.clock.now - timedelta(seconds=60),
                     first[:15]: world.clock.now - timedelta(seconds=60)}
    assert len([c for c in sandbox.server.calls() if "/query" in c.path]) == 3  # 300 Ids a query

    # An object without history, or one the user may not see: no dates, not a failure.
    assert world.source.status_changed_at("Contact", ids[:3]) == {}
    (project_id,) = sandbox.seed("Project__c", [{"Name": "P", "Status__c": NEW}])
    assert world.source.status_changed_at("Project__c", [project_id]) == {}  # no Project__History: INVALID_TYPE
    sandbox.track_history("Project__c", "Status__c")
    sandbox.edit_as_person("Project__c", project_id, Status__c=WORKING)
    assert world.source.status_changed_at("Project__c", [project_id]) == {project_id: world.clock.now}
    sandbox.deny_read("LeadHistory")
    assert world.source.status_changed_at("Lead", [first]) == {}


def test_months_of_history_are_seeded_as_a_real_org_holds_them(world: World) -> None:
    past = world.seed_months("Lead", 40)
    by_id = past.by_id()
    records = {r.id: r for p in world.source.pull("Lead", Cursor(), until=world.clock.now) for r in p.records}
    assert set(records) == set(by_id)
    assert all(records[i].created_at == by_id[i].created for i in by_id)
    assert all(records[i].modified_at == by_id[i].modified < world.clock.now - timedelta(minutes=1) for i in by_id)
    spread = max(r.created for r in past.records) - min(r.created for r in past.records)
    assert spread > timedelta(days=60)
    changed = world.source.status_changed_at("Lead", past.ids)
    assert changed == {r.id: r.status_changed for r in past.records if r.status_changed is not None}
    activity = events(world)
    assert {e.record_id for e in activity} <= set(by_id)
    assert all(e.at <= world.clock.now - timedelta(minutes=1) for e in activity)
    assert any(e.type == "meeting_booked" for e in activity) and any(e.type == "call_logged" for e in activity)


def test_the_first_sync_over_months_of_history_moves_and_writes_nothing(world: World) -> None:
    """The fixture the engine's day-one tests use, through the real cycle: every record takes its
    CRM stage, months of replies, calls and meetings fire nothing, nothing is written."""
    past = world.seed_months("Lead", 60, activities=3)
    outcome = world.cycle()
    assert outcome.error is None and outcome.pulled.records == 60
    assert outcome.events.moves.transitions == 0 and not world.sandbox.writes()
    for record in past.records[:10]:
        assert [t["cause"] for t in transitions(world, record.id)] == ["external"]
    assert world.cycle(seconds=60).drained.done == 0 and not world.sandbox.writes()


# --- activity: Events, Shared Activities, an Account's roll-up -------------------------------------
def test_meetings_are_events_and_everyone_on_an_activity_gets_it(world: World) -> None:
    sandbox = world.sandbox
    host, guest, bystander = world.seed_leads(3)
    world.cycle()
    world.clock.advance(30)
    sandbox.log_activity("Event", who=[host, guest], Subject="Demo", Type="Meeting",
                         ActivityDateTime=world.clock.now + timedelta(days=2))
    sandbox.server.reset_calls()
    outcome = world.cycle()
    assert outcome.error is None and outcome.events.new == 2
    assert [stage(world, i) for i in (host, guest, bystander)] == ["Converted", "Converted", "New"]
    assert world.cycle().events.new == 0
    # One query per activity object, and one for the relations of a page's matching activities.
    sandbox.server.reset_calls()
    assert len(events(world)) == 2
    reads = [c for c in sandbox.server.calls() if "/query" in c.path]
    assert len(reads) == 3  # Task, Event, EventRelation (no Task matched: no TaskRelation query)


def test_without_shared_activities_whoid_is_the_person(world: World) -> None:
    host, guest = world.seed_leads(2)
    world.sandbox.deny_read("TaskRelation")  # what an org without Shared Activities answers
    world.sandbox.log_activity("Task", who=[host, guest], Subject="Call", Type="Call", shared=False)
    assert [(e.record_id, e.type) for e in events(world)] == [(host, "call_logged")]


def test_an_accounts_activity_includes_its_contacts_and_opportunities(open_world: OpenWorld) -> None:
    world = open_world(objects={"Account": OBJECTS["Account"]})
    sandbox = world.sandbox
    (account,) = sandbox.seed("Account", [{"Name": "Acme", "Account_Stage__c": "Target"}])
    (other,) = sandbox.seed("Account", [{"Name": "Other", "Account_Stage__c": "Target"}])
    (contact,) = sandbox.seed("Contact", [{"LastName": "C", "AccountId": account}])
    (deal,) = sandbox.seed("Opportunity", [{"Name": "Deal", "AccountId": account}])
    on_contact = sandbox.log_activity("Task", who=[contact], Subject="Call", Type="Call")
    on_deal = sandbox.log_activity("Event", what=deal, Subject="Kickoff", Type="Meeting")
    on_other = sandbox.log_activity("Task", what=other, Subject="Call", Type="Call")
    found = sorted((e.record_id, e.type, e.key) for e in events(world, "Account"))
    assert found == sorted([
        (account, "call_logged", f"Task:{on_contact}"),
        (account, "meeting_booked", f"Event:{on_deal}"),
        (other, "call_logged", f"Task:{on_other}"),
    ])


# --- permissions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden", ["Task", "Event"])
def test_activity_the_user_may_not_see_is_for_the_admin(world: World, hidden: str) -> None:
    world.sandbox.deny_read(hidden)
    with pytest.raises(CrmError) as raised:
        events(world)
    error = raised.value
    assert error.action is Action.ADMIN and error.code == "INVALID_TYPE"
    assert f"sObject type '{hidden}' is not supported." in error.message
    # The cycle keeps syncing records and shows the object degraded with Salesforce's words.
    world.seed_leads(1)
    outcome = world.cycle()
    assert outcome.error is None and outcome.pulled.records == 1
    assert outcome.degraded is not None and f"sObject type '{hidden}' is not supported." in outcome.degraded


@pytest.mark.parametrize(
    ("shape", "code", "words"),
    [
        ("deny_edit", "INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id"),
        ("read_only", "INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: Status."),
        ("no_value", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "bad value for restricted picklist field"),
    ],
)
def test_configuration_faults_on_write_are_for_the_admin(world: World, shape: str, code: str, words: str) -> None:
    a, b = world.seed_leads(2)
    if shape == "deny_edit":
        world.sandbox.deny_edit("Lead")
    elif shape == "read_only":
        world.sandbox.set_field_readonly("Lead", "Status")
    else:
        world.sandbox.remove_picklist_value("Lead", "Status", WORKING)
    outcomes = world.source.write_statuses("Lead", [StatusWrite(a, WORKING), StatusWrite(b, WORKING)])
    for outcome in outcomes:
        assert outcome.error is not None
        assert (outcome.error.action, outcome.error.code) == (Action.ADMIN, code)
        assert words in outcome.error.message
    assert not world.sandbox.writes()


# --- logins ----------------------------------------------------------------------------------------
def test_client_credentials_are_refused_on_the_generic_login_hosts(world: World) -> None:
    world.sandbox.login_host = "login.salesforce.com"
    with pytest.raises(CrmError) as raised:
        list(world.source.pull("Lead", Cursor(), until=world.clock.now))
    assert raised.value.action is Action.ADMIN
    assert "request not supported on this domain" in raised.value.message


def test_validate_refuses_client_credentials_on_login_salesforce_com(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n"
        "  sfdc:\n"
        "    type: salesforce\n"
        "    auth:\n"
        "      method: client_credentials\n"
        "      login_url: https://login.salesforce.com\n"
        "      client_id: id\n"
        "      client_secret: secret\n"
        f"    objects:\n      Lead: {{status_field: Status, mapping: {OBJECTS['Lead']['mapping']}}}\n"
    )
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}:6" in result.output and "My Domain" in result.output
    assert "https://acme.my.salesforce.com" in result.output and "secret" not in result.output

    # Without a login_url the source's instance_url, its My Domain, is where tokens are asked for.
    config.write_text(config.read_text().replace("      login_url: https://login.salesforce.com\n", "")
                      .replace("    type: salesforce\n", "    type: salesforce\n    instance_url: https://acme.my.salesforce.com\n"))
    settings = load_config(config).sources["sfdc"]
    assert isinstance(settings, SalesforceSource) and isinstance(settings.auth, ClientCredentialsAuth)
    assert settings.login_url == "https://acme.my.salesforce.com"
    config.write_text(config.read_text().replace("    instance_url: https://acme.my.salesforce.com\n", ""))
    with pytest.raises(ConfigError, match="My Domain"):
        load_config(config)


def test_the_jwt_audience_is_the_login_server_whatever_url_is_asked(open_world: OpenWorld) -> None:
    world = open_world(auth="jwt")
    list(world.source.pull("Lead", Cursor(), until=world.clock.now))  # a production org: login.salesforce.com

    world.sandbox.is_sandbox_org = True  # a sandbox org wants test.salesforce.com
    auth = world.source.settings.auth
    assert isinstance(auth, JwtAuth)

    def source(**changes: Any) -> Salesforce:
        return Salesforce(SOURCE, world.source.settings.model_copy(update={"auth": auth.model_copy(update=changes)}))

    refused, fixed = source(), source(audience="https://test.salesforce.com")
    try:
        with pytest.raises(CrmError, match="audience is invalid"):
            list(refused.pull("Lead", Cursor(), until=world.clock.now))
        list(fixed.pull("Lead", Cursor(), until=world.clock.now))
    finally:
        refused.close()
        fixed.close()
    assert JwtAuth(method="jwt", login_url="https://acme--uat.sandbox.my.salesforce.com", client_id="c",
                   username="u", private_key_file=Path("k")).aud == "https://test.salesforce.com"


# --- answers that are not the API's JSON ------------------------------------------------------------
def test_a_maintenance_page_is_retried_then_reported_with_its_words(world: World) -> None:
    world.seed_leads(3)
    world.source._connected()  # the login first: the faults below are for the API calls
    world.sandbox.answer_malformed("html", times=2)
    records = [r for p in world.source.pull("Lead", Cursor(), until=world.clock.now) for r in p.records]
    assert len(records) == 3 and len(world.sleeps) == 2

    world.sandbox.answer_malformed("truncated", times=world.source.settings.max_retries + 1)
    with pytest.raises(CrmError) as raised:
        list(world.source.pull("Lead", Cursor(), until=world.clock.now))
    assert raised.value.action is Action.RETRY
    assert 'not JSON: "{\\"totalSize\\":3,\\"done\\":true' in raised.value.message
