"""An object's first pull reads HubSpot's list API, not search: person edits made during and after the
listing are each read exactly once, and a listing cut short resumes where it stopped. hubspot-api-client
over HTTP to the sandbox (its search index lags, as a real account's does), the real engine and store."""

# ruff: noqa: F811  (the fixtures `server` and `clock` come from tests.hubspot_support)
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from connector.engine import _ahead
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sources.base import Cursor
from connector.sources.hubspot_listing import Listing, begin, page_cursor, resumed
from connector.sources.hubspot_stream import at_ms, ms_of
from connector.store import repo
from tests.hubspot_support import (  # noqa: F401  (server, clock: fixtures)
    T0,
    Connector,
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

PEOPLE = 1_000  # ten list answers of 100, five pages of 200
NEWEST = T0 - timedelta(days=1)


@pytest.fixture
def sandbox(server: HubSpotSandbox, clock: SandboxClock) -> Iterator[HubSpotSandbox]:
    fresh_portal(server, clock)
    server.set_search_lag(20.0)  # search shows each change 20 s late; the list and reads by id are live
    yield server
    server.set_search_lag(0.0)


def seeded(sandbox: HubSpotSandbox) -> list[str]:
    """PEOPLE contacts from an import three days ago, and one edited since: the newest stamp."""
    people = sandbox.seed("contacts", contacts(PEOPLE, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=3))
    sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"), modified_at=NEWEST)
    return people


def config(tmp_path: Path, sandbox: HubSpotSandbox) -> Path:
    return write_config(tmp_path, sandbox, f'"sqlite:///{tmp_path}/connector.db"', None, "")


def history(hub: Connector, external_id: str) -> list[tuple[str | None, str | None, str]]:
    record = hub.record(external_id)
    with hub.store.transaction() as session:
        return [(row.from_stage, row.to_stage, row.cause) for row in repo.history(session, record.id)]


def moves(hub: Connector, external_id: str) -> list[tuple[str | None, str | None]]:
    """The record's moves after its first sight (which the baseline records as it found it)."""
    return [(before, after) for before, after, _ in history(hub, external_id) if before is not None]


def test_edits_during_and_after_the_first_listing_are_each_read_exactly_once(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    people = seeded(sandbox)
    listed_early, listed_late, after_listing = people[5], people[950], people[500]
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        pages = 0

        def during_listing(_stats: object) -> None:
            nonlocal pages
            pages += 1
            if pages == 1:  # page one is committed; the last pages are still to be listed (one is read ahead)
                clock.advance(seconds=2)
                sandbox.edit_as_person("contacts", listed_early, hs_lead_status="CONNECTED")  # listed already
                sandbox.edit_as_person("contacts", listed_late, hs_lead_status="OPEN")  # to be listed as it is now

        first = hub.engine.pull(hub.synced(), clock.now, progress=during_listing)
        assert first.records == PEOPLE + 1 and first.new == PEOPLE + 1 and first.transitions == 0  # the baseline
        assert calls_to(sandbox, "POST", "/contacts/search") == 1  # one look at the newest stamp; then the list
        assert hub.record(listed_early).state.stage == "New"  # the list showed it before the edit
        assert hub.record(listed_late).state.stage == "Open"  # the list showed the edit: not a move
        with hub.store.transaction() as session:
            at, last_id = repo.get_cursor(session, "hubspot", "contacts")
        assert last_id is None and at is not None and at < NEWEST  # held before the listing

        clock.advance(seconds=5)
        sandbox.edit_as_person("contacts", after_listing, hs_lead_status="IN_PROGRESS")
        pulled = []
        for _ in range(4):  # a poll every 15 s, past the search lag
            clock.advance(seconds=15)
            outcome = hub.cycle(clock.now)
            assert outcome.error is None
            pulled.append(outcome.pulled.transitions)
        assert sum(pulled) == 2  # the edit the list missed and the one after it; nothing twice
        assert hub.record(listed_early).state.stage == "Connected"
        assert hub.record(after_listing).state.stage == "In Progress"
        assert moves(hub, listed_early) == [("New", "Connected")]
        assert moves(hub, after_listing) == [("New", "In Progress")]
        assert moves(hub, listed_late) == []  # read by the list and again by search: once
        assert sum(hub.stages().values()) == PEOPLE + 1
        with hub.store.transaction() as session:
            at, last_id = repo.get_cursor(session, "hubspot", "contacts")
        assert last_id is not None and not last_id.startswith("list:")  # searches go on from HubSpot's stamps
        assert at is not None and at <= clock.now


def test_a_listing_cut_short_resumes_where_it_stopped(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    """A crash after the second page: the next pull lists the pages after it only, and nothing is lost."""
    people = seeded(sandbox)

    class Crash(Exception):
        pass

    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        pages = 0

        def crash_after_two(_stats: object) -> None:
            nonlocal pages
            pages += 1
            if pages == 2:
                raise Crash

        with pytest.raises(Crash):
            hub.engine.pull(hub.synced(), clock.now, progress=crash_after_two)
        assert sum(hub.stages().values()) == 400
        with hub.store.transaction() as session:
            _, last_id = repo.get_cursor(session, "hubspot", "contacts")
        assert last_id is not None and last_id.startswith("list:")
    sandbox.edit_as_person("contacts", people[10], hs_lead_status="CONNECTED")  # in what was listed before
    sandbox.server.reset_calls()

    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:  # a new process
        rest = hub.engine.pull(hub.synced(), clock.now)
        assert rest.records == PEOPLE + 1 - 400 and rest.new == PEOPLE + 1 - 400  # each record once in all
        assert calls_to(sandbox, "GET", "/objects/contacts") <= 7 + 1  # the seven answers left (+ a limits probe)
        assert calls_to(sandbox, "POST", "/contacts/search") == 0  # the start was kept from the first run
        assert sum(hub.stages().values()) == PEOPLE + 1
        for _ in range(3):
            clock.advance(seconds=15)
            assert hub.cycle(clock.now).error is None
        assert moves(hub, people[10]) == [("New", "Connected")]  # the search from the listing's start read it


def test_a_paging_token_hubspot_refuses_lists_from_the_start_again(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    """A token kept across a crash that HubSpot no longer takes: everything is read, nothing stalls."""
    people = sandbox.seed("contacts", contacts(250, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=3))
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        kept = Cursor(at_ms(ms_of(T0 - timedelta(days=3)) - 1), "list:05:zzzzz")  # the sandbox takes ids only
        pages = list(hub.source.pull("contacts", kept, until=clock.now))
        assert sorted(r.id for page in pages for r in page.records) == sorted(people)
        assert pages[-1].cursor == Cursor(T0 - timedelta(days=3), None)  # the start kept; searches go on


def test_an_empty_object_lists_again_until_it_has_records(
    tmp_path: Path, sandbox: HubSpotSandbox, clock: SandboxClock
) -> None:
    with open_connector(config(tmp_path, sandbox), retry_sleep=no_wait) as hub:
        assert hub.cycle(clock.now).pulled.records == 0
        with hub.store.transaction() as session:
            assert repo.get_cursor(session, "hubspot", "contacts") == (None, None)
        clock.advance(seconds=30)
        (person,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"))
        assert hub.cycle(clock.now).pulled.new == 1
        assert hub.record(person).state.stage == "New"


# --- the listing's cursor on its own -----------------------------------------------------------------
def test_listing_cursors_resume_and_stay_ordered_as_the_engine_orders_cursors() -> None:
    listing = begin(ms_of(T0), 120_000)
    assert listing.start_ms == ms_of(T0) - 120_000
    tokens = ["101", "999", "1000", "99999", "100000"]
    cursors = [page_cursor(listing, token) for token in tokens]
    assert [resumed(c) for c in cursors] == [Listing(listing.start_ms, t) for t in tokens]
    for before, after in pairwise(cursors):
        assert _ahead(after, before) and not _ahead(before, after)  # "1000" after "999": stored as it goes
    done = page_cursor(listing, None)
    assert done == Cursor(at_ms(listing.start_ms), None) and resumed(done) is None
    assert _ahead(done, cursors[-1])  # the last page's cursor replaces every listing cursor
    assert page_cursor(listing, "x" * 41) == Cursor() and not _ahead(Cursor(), cursors[0])  # kept, not lost
    assert resumed(Cursor(at_ms(0), "1234")) is None and resumed(Cursor()) is None  # search cursors
    assert resumed(Cursor(at_ms(0), "list:05:123")) is None  # a length that does not match: not ours
    assert page_cursor(begin(None, 120_000), None) == Cursor()  # no record yet: nothing to start from
