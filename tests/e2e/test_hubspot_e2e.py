"""The HubSpot source end to end: hubspot-api-client over HTTP against the sandbox, through the real
engine, outbox drain, cycle jobs and store. Nothing of ours is mocked; only the waits where waiting
is not the point are skipped (`retry_sleep=no_wait`)."""

# ruff: noqa: F811  (the fixtures `server` and `clock` come from tests.hubspot_support)
from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
import urllib3

from connector.config import HubSpotSource, load_config
from connector.cycle import ObjectOutcome
from connector.live import check_object
from connector.resync import ResyncOptions, resync
from connector.sandbox._http import Fault, LoopbackServer, Request, Response
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sources.base import RemoteEvent, StatusWrite
from connector.sources.errors import Action, CrmError
from connector.sources.hubspot import HubSpot
from connector.store import repo
from tests.hubspot_support import (  # noqa: F401  (server, clock: fixtures)
    LEAD_STATUS,
    LIFECYCLE,
    T0,
    SandboxClock,
    calls_to,
    clock,
    contacts,
    fresh_portal,
    no_wait,
    open_connector,
    server,
    started_sandbox,
    write_config,
)

NOW = T0 + timedelta(minutes=1)


def event(record_id: str, kind: str) -> RemoteEvent:
    return RemoteEvent(record_id, kind, NOW, f"test:{kind}:{record_id}")


@pytest.fixture
def sandbox(server: HubSpotSandbox, clock: SandboxClock) -> Iterator[HubSpotSandbox]:
    fresh_portal(server, clock)
    yield server
    server.server.faults.clear()


@pytest.fixture
def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/connector.db"


def config(
    tmp_path: Path, sandbox: HubSpotSandbox, database: str, objects: dict[str, str] | None = None, source: str = ""
) -> Path:
    return write_config(tmp_path, sandbox, f'"{database}"', objects, source)


# --- pulls ---------------------------------------------------------------------------------------
def test_initial_then_incremental_pull(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, sqlite: str
) -> None:
    new = sandbox.seed("contacts", contacts(450, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=2))
    working = sandbox.seed("contacts", contacts(30, hs_lead_status="IN_PROGRESS"), modified_at=T0 - timedelta(days=1))
    odd = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"))
    sandbox.add_option("contacts", "hs_lead_status", "NURTURE")
    sandbox.edit_as_person("contacts", odd[0], hs_lead_status="NURTURE")
    # The search window on its own: a first pull through search (`list_first=False`), as every
    # incremental pull reads (the first pull's listing is tested in test_hubspot_listing.py).
    with open_connector(config(tmp_path, sandbox, sqlite), retry_sleep=no_wait, list_first=False) as hub:
        first = hub.cycle(NOW)
        assert first.error is None and first.pulled.records == 481
        assert hub.stages() == {"New": 450, "In Progress": 30, None: 1}
        assert hub.record(odd[0]).state.quarantined == "NURTURE"
        searches = calls_to(sandbox, "POST", "/contacts/search")
        # 450 share one instant: a page of them, whether ids compare as numbers (asked once), three by
        # id on that millisecond, then the 31 after.
        assert searches == 6

        clock.advance(minutes=5)
        sandbox.edit_as_person("contacts", new[7], hs_lead_status="CONNECTED")
        sandbox.edit_as_person("contacts", odd[0], hs_lead_status="OPEN")
        (late,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"))
        sandbox.server.reset_calls()
        second = hub.cycle(NOW + timedelta(minutes=6))
        assert second.error is None and second.pulled.records == 3
        assert (second.pulled.transitions, second.pulled.new) == (2, 1)  # two moves, one record created since
        assert hub.record(new[7]).state.stage == "Connected" and hub.record(odd[0]).state.quarantined is None
        assert hub.record(late).state.stage == "New"
        assert calls_to(sandbox, "POST", "/contacts/search") == 1
        with hub.store.transaction() as session:
            at, last_id = repo.get_cursor(session, "hubspot", "contacts")
        assert (at, last_id) == (clock.now, late)

        # Search never returns archived records: reconcile lists them, and they leave the funnel.
        sandbox.archive("contacts", working[0])
        report = resync(hub.engine, hub.synced(), ResyncOptions(full=True), NOW + timedelta(minutes=7))
        assert report.read == 482 and report.repaired.deleted == 1
        assert hub.record(working[0]).deleted


def test_25000_records_on_one_millisecond_come_exactly_once(
    tmp_path: Path, sandbox: HubSpotSandbox, sqlite: str
) -> None:
    before = sandbox.seed("contacts", contacts(150, hs_lead_status="OPEN"), modified_at=T0 - timedelta(seconds=1))
    crowd = sandbox.seed("contacts", contacts(25_000, hs_lead_status="NEW"), modified_at=T0)
    after = sandbox.seed("contacts", contacts(150, hs_lead_status="OPEN"), modified_at=T0 + timedelta(milliseconds=1))
    path = config(tmp_path, sandbox, sqlite)
    # Search's tie paging, as an incremental pull after a bulk import meets it (a first pull lists).
    with open_connector(path, retry_sleep=no_wait, searches_per_second=0, list_first=False) as hub:
        outcome = hub.cycle(NOW)
        assert outcome.error is None
        assert outcome.pulled.records == 25_300 and outcome.pulled.new == 25_300  # each exactly once
        assert hub.stages() == {"New": 25_000, "Open": 300}
        searches = calls_to(sandbox, "POST", "/contacts/search")
        assert searches <= 25_300 / 200 + 5  # keyset pages through the crowd; no loop, no 10,000 cap
        with hub.store.transaction() as session:
            assert repo.get_cursor(session, "hubspot", "contacts")[1] == after[-1]

        # The lookback re-reads the last seconds, but a crowd behind the cursor only one page deep.
        sandbox.server.reset_calls()
        again = hub.cycle(NOW + timedelta(minutes=1))
        assert again.error is None and again.pulled.changed == 0 and again.pulled.records == 500
        assert calls_to(sandbox, "POST", "/contacts/search") == 3
        assert hub.record(before[0]).state.stage == "Open" and hub.record(crowd[-1]).state.stage == "New"


# --- write-back ----------------------------------------------------------------------------------
def test_writeback_is_echo_free_and_a_persons_edit_wins(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, db_url: str
) -> None:
    ann, bob, cy = sandbox.seed("contacts", contacts(3, hs_lead_status="NEW"))
    with open_connector(config(tmp_path, sandbox, db_url), retry_sleep=no_wait) as hub:
        hub.cycle(NOW)
        for person in (ann, bob, cy):  # the decision: an email went out to each
            hub.engine.feed_event(hub.synced(), person, "email_sent", NOW, NOW)
        assert hub.record(ann).state.stage == "Attempted"

        # Between the decision and the drain, a person calls Bob and sets him to Connected.
        clock.advance(seconds=30)
        sandbox.edit_as_person("contacts", bob, hs_lead_status="CONNECTED")
        outcome = hub.cycle(NOW + timedelta(minutes=1))
        assert outcome.error is None
        drained = outcome.drained
        assert (drained.done, drained.conflicts, drained.dead) == (2, 0, 0)  # the pull saw Bob's edit first
        assert sandbox.record("contacts", bob)["hs_lead_status"] == "CONNECTED"
        assert hub.record(bob).state.stage == "Connected" and hub.record(bob).state.set_by == "external"

        # Now the edit lands after the pull, right before the drain: the conflict check catches it.
        hub.engine.feed_event(hub.synced(), cy, "meeting_booked", NOW, NOW + timedelta(minutes=2))
        assert hub.record(cy).state.stage == "In Progress"
        sandbox.edit_as_person("contacts", cy, hs_lead_status="UNQUALIFIED")
        alone = ObjectOutcome("hubspot", "contacts")
        hub.jobs.drain(hub.synced(), NOW + timedelta(minutes=2), alone)  # alone, as the daemon's write-back job
        assert alone.error is None and alone.drained.conflicts == 1 and alone.drained.done == 0
        assert sandbox.record("contacts", cy)["hs_lead_status"] == "UNQUALIFIED"  # theirs stays
        assert hub.record(cy).state.stage == "Unqualified"  # the stage follows the person

        # Echo-free: our own writes come back in the next pull and change nothing.
        writes, transitions = len(sandbox.writes()), hub.transitions()
        clock.advance(minutes=5)
        quiet = hub.cycle(NOW + timedelta(minutes=10))
        assert quiet.error is None and quiet.pulled.records >= 2 and quiet.pulled.changed == 0
        assert quiet.drained.claimed == 0
        assert len(sandbox.writes()) == writes and hub.transitions() == transitions
        assert sandbox.writes() == [
            (ann, {"hs_lead_status": "ATTEMPTED_TO_CONTACT"}),
            (cy, {"hs_lead_status": "ATTEMPTED_TO_CONTACT"}),
        ]


def test_partial_failures_are_dead_lettered_with_hubspots_words(
    tmp_path: Path, sandbox: HubSpotSandbox, sqlite: str
) -> None:
    people = sandbox.seed("contacts", contacts(5, hs_lead_status="NEW"))
    sandbox.fail_writes(people[1::2], "VALIDATION_ERROR", "Lead status is locked by a workflow")
    with open_connector(config(tmp_path, sandbox, sqlite), retry_sleep=no_wait) as hub:
        hub.cycle(NOW)
        for person in people:
            hub.engine.feed_event(hub.synced(), person, "call_logged", NOW, NOW)
        sandbox.server.reset_calls()
        outcome = hub.cycle(NOW + timedelta(minutes=1))
        assert (outcome.drained.done, outcome.drained.dead) == (3, 2)
        assert calls_to(sandbox, "POST", "/batch/update") == 1 and calls_to(sandbox, "POST", "/batch/read") == 1
        dead = {i.external_id: i.last_error for i in hub.outbox() if i.state == "dead"}
        assert dead == {p: "VALIDATION_ERROR: Lead status is locked by a workflow" for p in people[1::2]}
        assert [sandbox.record("contacts", p)["hs_lead_status"] for p in people] == [
            "CONNECTED", "NEW", "CONNECTED", "NEW", "CONNECTED",
        ]  # fmt: skip


def test_a_refused_value_fails_only_its_own_records(tmp_path: Path, sandbox: HubSpotSandbox, sqlite: str) -> None:
    """HubSpot refuses a whole batch for one bad value, without saying which record: the source resends
    by value, so the good writes land and the bad ones carry HubSpot's message."""
    people = sandbox.seed("contacts", contacts(4, hs_lead_status="NEW"))
    with open_connector(config(tmp_path, sandbox, sqlite), retry_sleep=no_wait) as hub:
        outcomes = hub.source.write_statuses(
            "contacts",
            [StatusWrite(people[0], "OPEN"), StatusWrite(people[1], "RETIRED"), StatusWrite(people[2], "OPEN"),
             StatusWrite(people[3], "CONNECTED")],
        )  # fmt: skip
    assert [o.ok for o in outcomes] == [True, False, True, True]
    error = outcomes[1].error
    # A value the options lack is the configuration's fault, refused whatever the record: the admin's.
    assert error is not None and error.action is Action.ADMIN and "RETIRED was not one of the allowed" in error.message
    assert "hs_lead_status" in error.message
    assert calls_to(sandbox, "POST", "/batch/update") == 4  # the batch, then one per distinct value


def test_the_status_field_is_described_from_the_properties_api(
    tmp_path: Path, sandbox: HubSpotSandbox, sqlite: str
) -> None:
    sandbox.add_option("contacts", "hs_lead_status", "NURTURE", "Nurture")
    objects = {"contacts": LEAD_STATUS, "companies": LEAD_STATUS.replace("hs_lead_status", "no_such_property")}
    with open_connector(config(tmp_path, sandbox, sqlite, objects=objects), retry_sleep=no_wait) as hub:
        info = hub.source.describe_field("contacts")
        assert info.exists and info.is_picklist and info.type == "enumeration"
        assert [v.value for v in info.values][-2:] == ["BAD_TIMING", "NURTURE"]
        assert info.values[-1].label == "Nurture" and info.values[-1].order == 8 and info.values[-1].active
        findings = [str(f) for f in check_object(hub.source, hub.synced())]
        assert len(findings) == 1 and "'NURTURE'" in findings[0]  # `validate --live` names the unmapped value
        assert not hub.source.describe_field("companies").exists


# --- HubSpot's lifecycle rule --------------------------------------------------------------------
def test_lifecycle_stage_moved_backwards_is_cleared_first(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, sqlite: str
) -> None:
    sandbox.lifecycle_backwards = "reject"  # an earlier stage sent directly is refused, not ignored
    (person,) = sandbox.seed("contacts", contacts(1, lifecyclestage="salesqualifiedlead"))
    path = config(tmp_path, sandbox, sqlite, objects={"contacts": LIFECYCLE})
    with open_connector(path, retry_sleep=no_wait) as hub:
        hub.cycle(NOW)
        assert hub.record(person).state.stage == "SQL"
        hub.engine.set_stage(hub.synced(), person, "Lead", NOW, note="re-qualify")
        sandbox.server.reset_calls()
        outcome = hub.cycle(NOW + timedelta(minutes=1))
        assert outcome.error is None and outcome.drained.done == 1
        assert sandbox.record("contacts", person)["lifecyclestage"] == "lead"
        assert sandbox.writes() == [(person, {"lifecyclestage": ""}), (person, {"lifecyclestage": "lead"})]
        sent = [
            (c.method, c.path.rsplit("/", 2)[-2:])
            for c in sandbox.server.calls()
            if (c.method != "POST" or "search" not in c.path) and not c.path.endswith("/objects/contacts")
        ]  # searches and the look at archived records (a list) aside
        assert sent == [
            ("POST", ["batch", "read"]),  # the conflict check
            ("GET", ["contacts", "lifecyclestage"]),  # the option order, read once
            ("POST", ["batch", "update"]),  # cleared
            ("POST", ["batch", "update"]),  # then set
        ]

        # Forward moves are written as they are, in one call.
        clock.advance(minutes=1)
        hub.engine.feed_event(hub.synced(), person, "email_replied", NOW, NOW + timedelta(minutes=2))
        sandbox.server.reset_calls()
        assert hub.cycle(NOW + timedelta(minutes=3)).drained.done == 1
        assert sandbox.writes()[-1] == (person, {"lifecyclestage": "marketingqualifiedlead"})
        assert calls_to(sandbox, "POST", "/batch/update") == 1 and calls_to(sandbox, "GET", "/lifecyclestage") == 0

        # Our idea of the CRM's stage is stale (a person moved it on): HubSpot answers 200 and keeps its
        # later stage; the source sees the value it kept, clears it and writes again.
        sandbox.lifecycle_backwards = "ignore"
        sandbox.edit_as_person("contacts", person, lifecyclestage="customer")
        stale = StatusWrite(person, "opportunity", previous_status="marketingqualifiedlead")
        (done,) = hub.source.write_statuses("contacts", [stale])
        assert done.ok and done.record_id == person
        assert sandbox.record("contacts", person)["lifecyclestage"] == "opportunity"
        assert sandbox.writes()[-3:] == [
            (person, {"lifecyclestage": "opportunity"}),  # acknowledged, not made
            (person, {"lifecyclestage": ""}),
            (person, {"lifecyclestage": "opportunity"}),
        ]


# --- activity ------------------------------------------------------------------------------------
def test_engagements_become_events_that_move_stages(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, sqlite: str
) -> None:
    sandbox.set_search_lag(0.5)  # engagements reach search a moment after they are logged
    ann, bob, cy, dee, eve = sandbox.seed("contacts", contacts(5, hs_lead_status="NEW"))
    clock.advance(seconds=1)
    spec = LEAD_STATUS.replace("}", ', activity: {types: {"calls:hs_call_status=NO_ANSWER": none}}}')
    with open_connector(config(tmp_path, sandbox, sqlite, objects={"contacts": spec}), retry_sleep=no_wait) as hub:
        hub.cycle(NOW)
        clock.advance(minutes=2)
        sandbox.add_engagement("emails", ann, {"hs_email_direction": "EMAIL", "hs_email_status": "SENT"})
        sandbox.add_engagement("emails", bob, {"hs_email_direction": "INCOMING_EMAIL"})
        sandbox.add_engagement("meetings", cy, {"hs_meeting_outcome": "SCHEDULED"})
        sandbox.add_engagement("calls", dee, {"hs_call_status": "NO_ANSWER"})  # ignored by the config
        sandbox.add_engagement("emails", eve, {"hs_email_direction": "EMAIL", "hs_email_status": "BOUNCED"})
        sandbox.seed("emails", [{"hs_email_direction": "EMAIL", "associations.contact": [dee, eve]}])  # to two
        clock.advance(seconds=1)
        sandbox.server.reset_calls()
        outcome = hub.cycle(NOW + timedelta(minutes=5))
        assert outcome.error is None
        assert outcome.events.events == 6 and outcome.events.new == 6
        stages = {p: hub.record(p).state.stage for p in (ann, bob, cy, dee, eve)}
        assert stages == {ann: "Attempted", bob: "Connected", cy: "In Progress", dee: "Attempted", eve: "Attempted"}
        assert outcome.drained.done == 5
        # One association read per page of engagements, not one per engagement.
        assert calls_to(sandbox, "POST", "/associations/emails/contacts/batch/read") == 1
        assert calls_to(sandbox, "POST", "/associations/calls/contacts/batch/read") == 0  # nothing to map

        # The same activity is not taken twice: the lookback re-reads it, the inbox drops it.
        again = hub.cycle(NOW + timedelta(minutes=6))
        assert again.error is None and again.events.new == 0 and again.drained.claimed == 0


# --- faults, limits and budget -------------------------------------------------------------------
def test_transient_faults_converge_with_each_write_landing_once(
    tmp_path: Path, sandbox: HubSpotSandbox, sqlite: str
) -> None:
    people = sandbox.seed("contacts", contacts(500, hs_lead_status="NEW"))
    flip = iter(range(10**9))
    sandbox.server.faults.transient = lambda: Fault.DROP if next(flip) % 3 == 0 else Response(503, {"message": "x"})
    sandbox.server.faults.transient_rate = 0.3
    with open_connector(config(tmp_path, sandbox, sqlite), retry_sleep=no_wait) as hub:
        now = NOW
        hub.cycle(now)
        hub.engine.apply_events(
            hub.synced(), [event(p, "email_sent" if n % 2 else "call_logged") for n, p in enumerate(people)], now
        )
        for _ in range(20):
            now += timedelta(hours=1)  # past any retry delay of the outbox
            hub.cycle(now)
            if not hub.outbox_states().get("pending"):
                break
        assert hub.outbox_states() == {"done": 500}
    faults = [c for c in sandbox.server.calls() if c.status in (0, 503)]
    assert len(faults) >= 3  # the faults happened
    landed = sandbox.writes("contacts")
    assert sorted(i for i, _ in landed) == sorted(people)  # once per record
    expected = {p: "ATTEMPTED_TO_CONTACT" if n % 2 else "CONNECTED" for n, p in enumerate(people)}
    assert {i: values["hs_lead_status"] for i, values in landed} == expected


def test_a_429_storm_is_paced_and_converges_without_failures(
    tmp_path: Path, sandbox: HubSpotSandbox, sqlite: str
) -> None:
    """Another integration on the same token grabs whatever is left of a small window, every 0.7 s.
    The connector meets 429s, waits them out, paces itself on the limit headers, and converges."""
    people = sandbox.seed("contacts", contacts(500, hs_lead_status="NEW"))
    sandbox.rate_limit, sandbox.rate_window, sandbox.search_rate_per_second = 10, 1.0, 5
    stop = threading.Event()
    neighbour = urllib3.PoolManager(retries=False)
    url, headers = f"{sandbox.url}/crm/v3/objects/companies?limit=1", {"Authorization": f"Bearer {sandbox.token}"}

    def greedy_integration() -> None:
        while not stop.is_set():
            while neighbour.request("GET", url, headers=headers).status != 429:
                pass
            stop.wait(0.7)

    while neighbour.request("GET", url, headers=headers).status != 429:
        pass  # the window is spent before the connector's first call: its first answer is a 429
    thread = threading.Thread(target=greedy_integration, daemon=True)
    thread.start()
    try:
        with open_connector(config(tmp_path, sandbox, sqlite)) as hub:
            hub.cycle(NOW)
            hub.engine.apply_events(hub.synced(), [event(p, "email_sent") for p in people], NOW)
            outcome = hub.cycle(NOW + timedelta(minutes=1))
            ours = hub.source.pacer
            assert all(o.error is None and o.paused is None for o in hub.outcomes)
            assert outcome.drained.done == 500 and outcome.drained.dead == 0
            assert ours.rate_limited >= 1 and sandbox.rate_limited_count >= 5  # the connector met the storm ...
            assert ours.waited > 0  # ... and paced itself
    finally:
        stop.set()
        thread.join()
        neighbour.clear()
    assert sorted(i for i, _ in sandbox.writes("contacts")) == sorted(people)  # each write landed once
    assert sandbox.peak_rolling_calls() <= 10


def test_the_api_budget_pauses_the_source_and_it_resumes(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock, sqlite: str
) -> None:
    people = sandbox.seed("contacts", contacts(3000, hs_lead_status="NEW"))
    sandbox.daily_limit = 20
    ticks = [0.0]
    path = config(tmp_path, sandbox, sqlite, source="api_budget: 50%")
    with open_connector(path, retry_sleep=no_wait, clock=lambda: ticks[0], searches_per_second=0) as hub:
        first = hub.cycle(NOW)
        assert first.paused is not None and "api_budget" in first.paused and first.error is None
        assert 0 < sum(hub.stages().values()) < 3000  # the pages before the pause are kept
        usage = hub.source.usage()
        assert usage.limit == 20 and usage.used == 10
        with hub.store.transaction() as session:
            health = repo.health(session, "hubspot", "contacts")
            assert health.paused_until is not None and health.api_used == 10
        assert hub.cycle(NOW + timedelta(minutes=5)).paused is not None  # still paused: no call made
        assert sandbox.rate_limited_count == 0

        # Each new day at HubSpot, an hour on here: the source looks again and carries on, a budget a day.
        later, days = NOW, 0
        while days < 5:
            clock.advance(days=1)
            ticks[0] += 3601
            later += timedelta(days=1)
            days += 1
            outcome = hub.cycle(later)
            assert outcome.error is None
            if outcome.paused is None:
                break
        assert outcome.paused is None and days >= 1 and sum(hub.stages().values()) == len(people)
        assert sandbox.rate_limited_count == 0  # the budget stopped us, not HubSpot


def test_ca_bundle_is_honoured(tmp_path: Path, sandbox: HubSpotSandbox) -> None:
    ca, other = trustme.CA(), trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))

    def through(request: Request) -> Response:
        answer = sandbox.server.dispatch(request)
        assert isinstance(answer, Response)
        return answer

    front = LoopbackServer(through, tls=context)
    front.start()
    (person,) = sandbox.seed("contacts", contacts(1, hs_lead_status="OPEN"))
    try:
        for bundle, works in (("ca.pem", True), ("other.pem", False)):
            (tmp_path / "config.yaml").write_text(
                f"sources:\n  hubspot:\n    type: hubspot\n    base_url: {front.url}\n    ca_bundle: {bundle}\n"
                f"    auth: {{method: token, access_token: {sandbox.token}}}\n"
                f"    objects:\n      contacts: {LEAD_STATUS}\n"
            )
            settings = load_config(tmp_path / "config.yaml").sources["hubspot"]
            assert isinstance(settings, HubSpotSource)
            source = HubSpot("hubspot", settings, retry_sleep=no_wait)
            try:
                if works:
                    assert source.read_statuses("contacts", [person])[person].status == "OPEN"
                else:
                    with pytest.raises(CrmError) as failed:
                        source.read_statuses("contacts", [person])
                    assert failed.value.action is Action.ADMIN and "ca_bundle" in failed.value.message
            finally:
                source.close()
    finally:
        front.stop()
