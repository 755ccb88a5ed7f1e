"""The HubSpot source against a sandbox that behaves like a real account on day one: a search index
that lags, months of history, missing scopes, archives and merges, configuration refusals on write,
malformed answers and ids compared as text. hubspot-api-client over HTTP, the real engine and store;
only the waits where waiting is not the point are skipped."""

# ruff: noqa: F811  (the fixtures `server` and `clock` come from tests.hubspot_support)
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from connector.config import HubSpotSource, load_config
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sources.base import Cursor, RemoteRecord, StatusWrite
from connector.sources.errors import Action, CrmError
from connector.sources.hubspot import HubSpot
from connector.store import repo
from tests.hubspot_support import (  # noqa: F401  (server, clock: fixtures)
    LEAD_STATUS,
    LIFECYCLE,
    MAPPINGS,
    T0,
    History,
    SandboxClock,
    calls_to,
    clock,
    contacts,
    fresh_portal,
    hubspot_history,
    no_wait,
    open_connector,
    seed_history,
    server,
    started_sandbox,
    write_config,
)

NOW = T0 + timedelta(minutes=1)
COMPANY = f"{{status_field: company_stage, mapping: {MAPPINGS / 'hubspot-company.yaml'}}}"


@pytest.fixture
def sandbox(server: HubSpotSandbox, clock: SandboxClock) -> Iterator[HubSpotSandbox]:
    fresh_portal(server, clock)
    server.set_search_lag(1.0)  # a real account's index is never instant
    yield server
    server.server.faults.clear()


def config(
    tmp_path: Path, sandbox: HubSpotSandbox, objects: dict[str, str] | None = None, source: str = ""
) -> Path:
    return write_config(tmp_path, sandbox, f'"sqlite:///{tmp_path}/connector.db"', objects, source)


def source_on(path: Path) -> HubSpot:
    settings = load_config(path).sources["hubspot"]
    assert isinstance(settings, HubSpotSource)
    return HubSpot("hubspot", settings, retry_sleep=no_wait)


def pulled(source: HubSpot, obj: str, cursor: Cursor, until: object) -> list[RemoteRecord]:
    return [r for page in source.pull(obj, cursor, until=until) for r in page.records]  # type: ignore[arg-type]


# --- 1, 2: the search index lags; the settle window reads what it shows late ------------------------
def test_a_change_indexed_late_behind_newer_ones_is_pulled_on_a_later_cycle_exactly_once(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    late, early = sandbox.seed("contacts", contacts(2, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=3))
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        assert hub.cycle(clock.now).pulled.records == 2
        clock.advance(seconds=30)
        sandbox.index_late("contacts", late, 40)  # HubSpot indexes this change 40 s late...
        sandbox.edit_as_person("contacts", late, hs_lead_status="CONNECTED")
        clock.advance(seconds=3)
        sandbox.edit_as_person("contacts", early, hs_lead_status="OPEN")  # ...after this newer one
        assert sandbox.record("contacts", late)["hs_lead_status"] == "CONNECTED"  # reads by id are live

        moved = []
        for _ in range(6):  # a poll every 15 s, for longer than the settle window
            clock.advance(seconds=15)
            moved.append(hub.cycle(clock.now).pulled.transitions)
        assert hub.record(early).state.stage == "Open" and hub.record(late).state.stage == "Connected"
        assert sum(moved) == 2 and moved[0] == 1  # the newer change at once, the late one later, each once
        with hub.store.transaction() as session:
            at, _ = repo.get_cursor(session, "hubspot", "contacts")
        assert at is not None and at <= clock.now  # the cursor never ran ahead of what HubSpot stamped


def test_without_a_settle_window_the_late_change_is_lost(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    """The contrast that makes the test above mean something: the old pull (lookback only) skips it."""
    late, early = sandbox.seed("contacts", contacts(2, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=3))
    path = config(tmp_path, sandbox, source="lookback: 1s\nsettle: 1s")
    with open_connector(path, retry_sleep=no_wait) as hub:
        hub.cycle(clock.now)
        clock.advance(seconds=30)
        sandbox.index_late("contacts", late, 40)
        sandbox.edit_as_person("contacts", late, hs_lead_status="CONNECTED")
        clock.advance(seconds=3)
        sandbox.edit_as_person("contacts", early, hs_lead_status="OPEN")
        for _ in range(6):
            clock.advance(seconds=15)
            hub.cycle(clock.now)
        assert hub.record(early).state.stage == "Open" and hub.record(late).state.stage == "New"


def test_activity_logged_late_in_the_index_is_read_once(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    (person,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=3))
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        hub.cycle(clock.now)
        clock.advance(seconds=10)
        email = sandbox.add_engagement("emails", person, {"hs_email_direction": "INCOMING_EMAIL"})
        sandbox.index_late("emails", email, 30)
        sandbox.edit_as_person("emails", email, hs_email_subject="Re: hello")  # the edit is what lags
        clock.advance(seconds=1)
        sandbox.add_engagement("calls", person, {"hs_call_status": "COMPLETED"})
        new = []
        for _ in range(5):
            clock.advance(seconds=20)
            new.append(hub.cycle(clock.now).events.new)
        assert sum(new) == 2  # the email and the call, each once, though the settle window re-reads them


def test_the_stamp_after_our_write_is_hubspots_and_search_shows_the_old_one_meanwhile(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    sandbox.set_search_lag(30)
    (person,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=3))
    source = source_on(config(tmp_path, sandbox))
    try:
        clock.advance(minutes=1)
        (outcome,) = source.write_statuses("contacts", [StatusWrite(person, "OPEN", previous_status="NEW")])
        assert outcome.ok and outcome.modified_at == clock.now  # batch update's `updatedAt` for the record
        clock.advance(seconds=5)
        (seen,) = pulled(source, "contacts", Cursor(T0 - timedelta(days=4)), clock.now)
        assert seen.status == "NEW" and seen.modified_at < outcome.modified_at  # stale: older than our stamp
        assert source.read_statuses("contacts", [person])[person].status == "OPEN"  # reads by id are live
    finally:
        source.close()


def test_after_our_write_a_lagging_search_showing_the_old_value_changes_nothing(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    (person,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"))
    clock.advance(seconds=2)
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        hub.cycle(clock.now)
        sandbox.set_search_lag(45)  # from here on the index is 45 s behind
        hub.engine.feed_event(hub.synced(), person, "email_sent", clock.now, clock.now)
        clock.advance(seconds=1)
        assert hub.cycle(clock.now).drained.done == 1  # ATTEMPTED_TO_CONTACT written, HubSpot's stamp kept
        transitions = hub.transitions()
        for _ in range(5):  # search shows NEW (the old stamp) for 45 s, then our value (our stamp)
            clock.advance(seconds=15)
            outcome = hub.cycle(clock.now)
            assert outcome.error is None and outcome.drained.claimed == 0
        assert hub.record(person).state.stage == "Attempted" and hub.transitions() == transitions
        assert sandbox.writes() == [(person, {"hs_lead_status": "ATTEMPTED_TO_CONTACT"})]


# --- 4, 5: created_at, status_changed_at, months of history ---------------------------------------
def test_months_of_history_give_created_at_and_status_dates(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    history = seed_history(sandbox, clock.now)
    path = config(tmp_path, sandbox, {"contacts": LEAD_STATUS, "companies": COMPANY})
    source = source_on(path)
    try:
        records = pulled(source, "contacts", Cursor(), clock.now)
        assert len(records) == len(history.contacts)
        assert all(r.created_at is not None and r.created_at <= r.modified_at < history.now for r in records)
        changed = source.status_changed_at("contacts", history.contacts)
        assert set(changed) == set(history.contacts)  # 60 records: two batch reads of 50 (HubSpot's cap)
        assert calls_to(sandbox, "POST", "/contacts/batch/read") == 2
        for record_id, at in changed.items():
            assert abs(at - history.last_changed[record_id]) < timedelta(milliseconds=1)
        companies = source.status_changed_at("companies", history.companies)
        assert set(companies) == set(history.companies)
    finally:
        source.close()
    lifecycle = source_on(config(tmp_path, sandbox, {"contacts": LIFECYCLE}))
    try:
        entered = lifecycle.status_changed_at("contacts", history.contacts[:5])
        for record_id in history.contacts[:5]:
            stage = sandbox.record("contacts", record_id)["lifecyclestage"]
            assert entered[record_id].isoformat().startswith(
                sandbox.record("contacts", record_id)[f"hs_v2_date_entered_{stage}"][:19]
            )
    finally:
        lifecycle.close()


def test_a_first_sync_of_a_portal_with_months_of_history_writes_nothing(
    tmp_path: Path,
    sandbox: HubSpotSandbox,
    clock: SandboxClock,
    hubspot_history: History,
) -> None:
    history = hubspot_history
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        outcome = hub.cycle(clock.now)
        assert outcome.error is None and outcome.pulled.records == len(history.contacts)
        assert sandbox.writes() == []  # old activity fires no trigger; nothing is written back
        assert outcome.events.new == 0 and history.activity > 0  # activity before the baseline is not read


# --- 6, 7: scopes, and companies' activity ----------------------------------------------------------
def test_a_missing_engagement_scope_is_the_admins_with_hubspots_words(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    (person,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=1))
    sandbox.add_engagement("emails", person, {"hs_email_direction": "INCOMING_EMAIL"})
    sandbox.revoke_scope("emails")
    source = source_on(config(tmp_path, sandbox))
    try:
        assert len(pulled(source, "contacts", Cursor(), clock.now)) == 1  # records still read
        with pytest.raises(CrmError) as refused:
            list(source.pull_events("contacts", Cursor(T0 - timedelta(days=1)), until=clock.now))
        error = refused.value
        assert error.action is Action.ADMIN and error.status == 403 and error.code == "MISSING_SCOPES"
        assert "hasn't been granted all required scopes" in error.message and "sales-email-read" in error.message
    finally:
        source.close()


def test_no_write_scope_fails_every_write_as_the_admins_without_sending_more(
    tmp_path: Path, sandbox: HubSpotSandbox
) -> None:
    people = sandbox.seed("contacts", contacts(150, hs_lead_status="NEW"))
    sandbox.revoke_scope("contacts", write=True)
    source = source_on(config(tmp_path, sandbox))
    try:
        outcomes = source.write_statuses("contacts", [StatusWrite(p, "OPEN") for p in people])
    finally:
        source.close()
    assert all(o.error is not None and o.error.action is Action.ADMIN for o in outcomes)
    assert outcomes[0].error is not None and "crm.objects.contacts.write" in outcomes[0].error.message
    assert calls_to(sandbox, "POST", "/batch/update") == 1 and sandbox.writes() == []


def test_companies_activity_comes_through_their_associations(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    (acme,) = sandbox.seed("companies", [{"name": "Acme", "company_stage": "target"}])
    path = config(tmp_path, sandbox, {"companies": COMPANY})
    with open_connector(path, retry_sleep=no_wait) as hub:
        hub.cycle(clock.now, "companies")
        clock.advance(minutes=1)
        sandbox.add_engagement("meetings", acme, {"hs_meeting_outcome": "SCHEDULED"}, on="companies")
        clock.advance(minutes=1)
        outcome = hub.cycle(clock.now, "companies")
        assert outcome.error is None and outcome.events.new == 1
        assert hub.record(acme, "companies").state.stage == "Engaged"
        assert sandbox.record("companies", acme)["company_stage"] == "engaged"  # written back


# --- 8: archives and merges -------------------------------------------------------------------------
def test_an_archived_record_is_noticed_by_the_incremental_pull(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    people = sandbox.seed("contacts", contacts(3, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=1))
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        hub.cycle(clock.now)
        clock.advance(minutes=1)
        sandbox.archive("contacts", people[1])
        clock.advance(minutes=1)
        outcome = hub.cycle(clock.now)
        assert outcome.error is None and hub.record(people[1]).deleted and not hub.record(people[0]).deleted
        assert calls_to(sandbox, "GET", "/objects/contacts") >= 1  # the archived list, HubSpot's only reader


def test_a_merged_contact_is_deleted_and_points_at_the_survivor(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    keep, gone = sandbox.seed("contacts", contacts(2, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=1))
    source = source_on(config(tmp_path, sandbox))
    try:
        start = Cursor(clock.now)
        clock.advance(minutes=1)
        sandbox.merge("contacts", keep, gone)
        clock.advance(minutes=1)
        found = {r.id: r for r in pulled(source, "contacts", start, clock.now)}
        assert found[gone].deleted and found[gone].merged_into == keep and not found[keep].deleted
        read = source.read_statuses("contacts", [gone])  # HubSpot answers the survivor for the old id
        assert read[gone].deleted and read[gone].merged_into == keep
    finally:
        source.close()


# --- 9: configuration refusals on write -------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "code"), [("no_such_status", "PROPERTY_DOESNT_EXIST"), ("createdate", "READ_ONLY_VALUE")]
)
def test_a_status_field_hubspot_refuses_is_the_admins_not_each_records(
    tmp_path: Path, sandbox: HubSpotSandbox, field: str, code: str
) -> None:
    people = sandbox.seed("contacts", contacts(3, hs_lead_status="NEW"))
    objects = {"contacts": f"{{status_field: {field}, mapping: {MAPPINGS / 'hubspot-contact.yaml'}}}"}
    source = source_on(config(tmp_path, sandbox, objects))
    try:
        outcomes = source.write_statuses("contacts", [StatusWrite(p, "OPEN") for p in people])
    finally:
        source.close()
    errors = [o.error for o in outcomes]
    assert all(e is not None and e.action is Action.ADMIN and e.code == code for e in errors)
    assert errors[0] is not None and field in errors[0].message and sandbox.writes() == []


# --- 10: malformed answers --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["html", "truncated", "shape"])
def test_a_malformed_200_is_retried_then_reported_never_taken_for_empty(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, kind: str
) -> None:
    sandbox.seed("contacts", contacts(3, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=1))
    path = config(tmp_path, sandbox, source="max_retries: 2")
    with open_connector(path, retry_sleep=no_wait) as hub:
        sandbox.answer_malformed(kind)  # once: the retry gets the real answer
        first = hub.cycle(clock.now)
        assert first.error is None and first.pulled.records == 3
        clock.advance(minutes=1)
        sandbox.answer_malformed(kind, times=3)  # every attempt: reported, with what came, bounded
        failed = hub.cycle(clock.now)
        assert failed.error is not None and "MALFORMED_ANSWER" in failed.error and "Traceback" not in failed.error
        assert ("not JSON" if kind != "shape" else "without a 'results' list") in failed.error
        assert len(failed.error) < 600


# --- 11: ids compared as text --------------------------------------------------------------------------
@pytest.mark.parametrize("as_text", [False, True], ids=["ids-as-numbers", "ids-as-text"])
def test_records_sharing_a_millisecond_across_a_digit_boundary_come_once_under_both_readings(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, as_text: bool
) -> None:
    sandbox.ids_as_text = as_text
    sandbox.skip_ids(9_800 - 1_001)  # ids 9800 ... 10249: "10000" < "9999" as text
    people = sandbox.seed("contacts", contacts(450, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=1))
    path = config(tmp_path, sandbox, source="lookback: 1s\nsettle: 1s")
    # The crowd at a search cursor: the first pull searches too (a listing's cursor sits before it).
    with open_connector(path, retry_sleep=no_wait, list_first=False) as hub:
        first = hub.cycle(clock.now)
        assert first.error is None and first.pulled.records == 450
        assert sum(hub.stages().values()) == len(people)
        clock.advance(minutes=1)
        again = hub.cycle(clock.now)  # the crowd at the cursor re-read by id past it: nothing new, no stall
        assert again.error is None and again.pulled.records == 0


def test_missing_scopes_through_the_cycle_degrade_activity_and_pause_write_back(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    people = sandbox.seed("contacts", contacts(3, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=1))
    sandbox.revoke_scope("emails")
    sandbox.revoke_scope("contacts", write=True)
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        hub.cycle(clock.now)
        for person in people:
            hub.engine.feed_event(hub.synced(), person, "email_sent", clock.now, clock.now)
        clock.advance(minutes=1)
        sandbox.edit_as_person("contacts", people[0], hs_lead_status="CONNECTED")
        clock.advance(minutes=1)
        outcome = hub.cycle(clock.now)
        assert outcome.error is None and outcome.pulled.transitions == 1  # records still sync
        assert outcome.degraded is not None and "sales-email-read" in outcome.degraded
        assert outcome.drained.paused is not None and "crm.objects.contacts.write" in outcome.drained.paused
        # The person's edit cancelled one write; the other two wait for the admin, neither sent nor dead.
        assert outcome.drained.dead == 0 and hub.outbox_states() == {"cancelled": 1, "pending": 2}
        assert sandbox.writes() == []
