"""The store on SQLite and PostgreSQL: migrations, instants, the outbox, events, cursors and crash safety.

DESIGN.md "Crash safety": a page's records, transitions, outbox items and the cursor commit in one
transaction; a kill at any point loses nothing and duplicates no transition.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from connector.config import Config, SyncedObject, load_config
from connector.engine import Engine
from connector.rules import Cause, RecordState, SetBy, Transition
from connector.sources.base import Cursor, Page, RemoteEvent, RemoteRecord
from connector.store import repo
from connector.store.db import DatabaseError, Store, head_revision, make_engine, open_store
from connector.store.schema import OutboxItem, TransitionRow
from tests import _kill_target
from tests.support import offline_config

MAPPING = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress}
  - {name: Won, category: succeeded, sticky: true}
  - {name: Lost, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Closed Won: Won
  Closed Lost: Lost
triggers:
  - {name: replied, on: email_replied, from: [New], to: Working}
  - {name: opened,  on: email_opened, to: New}
  - {name: booked,  on: meeting_booked, to: Won}
"""

T0 = datetime(2024, 2, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
TABLES = {"records", "transitions", "outbox", "cursors", "events", "source_health"}


class Boom(Exception):
    """The process dies here."""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(offline_config(tmp_path, MAPPING, objects=("Lead", "Contact")), environ={})


@pytest.fixture
def engine(config: Config, store: Store) -> Engine:
    return Engine(config, store, sources={})


def write(external_id: str, stage: str | None = "New", writeback: str | None = None, **state: Any) -> repo.RecordWrite:
    return repo.RecordWrite(
        external_id=external_id,
        record_id=None,
        state=RecordState(stage=stage, set_by=SetBy.EXTERNAL, remote_status="Open", stage_entered_at=T0, **state),
        transitions=[Transition(T0, None, stage, Cause.EXTERNAL, "Open")],
        writeback=writeback,
    )


def revision(db_url: str) -> str | None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    finally:
        engine.dispose()


# --- migrations ----------------------------------------------------------------------------------
def test_migrations_create_the_schema_and_a_second_open_is_a_no_op(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(db_url)
    try:
        names = set(inspect(store.engine).get_table_names())
        assert names >= TABLES | {"alembic_version"}
        with store.transaction() as session:
            repo.save_records(session, "crm", "Lead", [write("L1")], T0)
    finally:
        store.close()
    assert revision(db_url) == head_revision()

    def no_migration(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a database at head must not be migrated again")

    monkeypatch.setattr("alembic.command.upgrade", no_migration)
    again = open_store(db_url)
    try:
        with again.transaction() as session:
            assert repo.get_record(session, "crm", "Lead", "L1") is not None
    finally:
        again.close()
    assert revision(db_url) == head_revision()


def test_a_database_from_a_newer_connector_is_refused(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(db_url).close()
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    # open_store does not dispose the engine it made when it refuses the database: do it here, or
    # the pooled connection is garbage-collected open (an unraisable-exception warning on PostgreSQL).
    made: list[Any] = []

    def tracked(url: str, **kwargs: Any) -> Any:
        made.append(make_engine(url, **kwargs))
        return made[-1]

    monkeypatch.setattr("connector.store.db.make_engine", tracked)
    try:
        with pytest.raises(DatabaseError, match="newer") as refused:
            open_store(db_url).close()
    finally:
        for leftover in made:
            leftover.dispose()
    assert "9999_from_the_future" in str(refused.value)
    assert revision(db_url) == "9999_from_the_future"  # left as it was


# --- instants ------------------------------------------------------------------------------------
def test_timestamps_come_back_tz_aware_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    entered = datetime(2024, 6, 1, 14, 30, 15, 123456, tzinfo=paris)
    activity = datetime(2024, 6, 2, 8, 0, tzinfo=UTC)
    with store.transaction() as session:
        repo.save_records(session, "crm", "Lead", [write("L1", last_activity_at=activity, writeback="Contacted")], T0)
        session.execute(
            repo.RECORDS.update().values(stage_entered_at=entered).where(repo.RECORDS.c.external_id == "L1")
        )
        repo.save_cursor(session, "crm", "Lead", entered, "L1", T0)
    with store.transaction() as session:
        record = repo.get_record(session, "crm", "Lead", "L1")
        assert record is not None
        instants = [record.state.stage_entered_at, record.state.last_activity_at]
        instants.append(repo.get_cursor(session, "crm", "Lead")[0])
        instants += [t.at for t in repo.history(session, record.id)]
        instants += [i.next_attempt_at for i in repo.claim_due(session, "crm", "Lead", T0, 10)]
    assert len(instants) == 5
    for instant in instants:
        assert instant is not None
        assert instant.utcoffset() == timedelta(0), instant
        assert instant.tzinfo is not None
    assert record.state.stage_entered_at == entered  # the same instant, now in UTC
    assert record.state.stage_entered_at.hour == 12 and record.state.stage_entered_at.microsecond == 123456
    assert record.state.last_activity_at == activity


# --- the outbox ----------------------------------------------------------------------------------
def pending_rows(session: Any, record_id: int) -> list[OutboxItem]:
    query = select(OutboxItem).where(OutboxItem.record_id == record_id, OutboxItem.state == "pending")
    return list(session.scalars(query))


def test_a_newer_status_replaces_the_pending_one(store: Store) -> None:
    with store.transaction() as session:
        w = write("L1", writeback="Contacted")
        repo.save_records(session, "crm", "Lead", [w], T0)
        record_id = w.record_id
        assert record_id is not None
    with store.transaction() as session:
        [claimed] = repo.claim_due(session, "crm", "Lead", T0, 10)
        first_id, first_version = claimed.id, claimed.version
        assert claimed.status == "Contacted"
    # While that one is being sent, a newer status is queued: it replaces the pending item.
    with store.transaction() as session:
        repo.queue_writebacks(session, "crm", "Lead", [(record_id, "L1", "Closed Won", None)], T0 + SECOND)
    with store.transaction() as session:
        [item] = pending_rows(session, record_id)
        assert (item.status, item.version) == ("Closed Won", first_version + 1)
        # The sender of the replaced status finishes: that must not close the newer one.
        assert repo.finish_item(session, first_id, first_version, "done", T0 + 2 * SECOND) is False
    with store.transaction() as session:
        [item] = pending_rows(session, record_id)
        assert item.status == "Closed Won"
        assert repo.finish_item(session, item.id, item.version, "done", T0 + 3 * SECOND) is True
    with store.transaction() as session:
        assert pending_rows(session, record_id) == []
        # A status queued after that is a new pending item; still one per record.
        repo.queue_writebacks(session, "crm", "Lead", [(record_id, "L1", "Closed Lost", None)], T0 + 4 * SECOND)
        repo.queue_writebacks(session, "crm", "Lead", [(record_id, "L1", "Open", None)], T0 + 5 * SECOND)
    with store.transaction() as session:
        assert [i.status for i in pending_rows(session, record_id)] == ["Open"]
        assert repo.outbox_counts(session, "crm", "Lead") == {"done": 1, "pending": 1}


def test_a_refusal_forgets_only_the_refused_status_of_what_was_sent(store: Store) -> None:
    with store.transaction() as session:
        writes = [write("L1"), write("L2")]
        repo.save_records(session, "crm", "Lead", writes, T0)
        one, two = (w.record_id for w in writes)
        assert one is not None and two is not None
        repo.note_sent(session, [(one, "Contacted"), (one, "Closed Won"), (two, "Contacted")], T0)
    with store.transaction() as session:
        # Closed Won refused for L1 and Contacted for L2: L1's Contacted, sent before, may have landed.
        repo.forget_refused(session, [(one, "Closed Won"), (two, "Contacted"), (two, "Contacted")])
    with store.transaction() as session:
        assert repo.sent_statuses(session, [one, two]) == {one: {"Contacted"}}
        repo.forget_sent(session, [one])
    with store.transaction() as session:
        assert repo.sent_statuses(session, [one, two]) == {}


def test_the_database_refuses_a_second_pending_item(store: Store) -> None:
    with store.transaction() as session:
        w = write("L1", writeback="Contacted")
        repo.save_records(session, "crm", "Lead", [w], T0)
    with pytest.raises(IntegrityError), store.transaction() as session:
        session.add(
            OutboxItem(
                record_id=w.record_id,
                source="crm",
                object="Lead",
                external_id="L1",
                status="Closed Won",
                state="pending",
                attempts=0,
                next_attempt_at=T0,
                version=1,
                created_at=T0,
                updated_at=T0,
            )
        )
        session.flush()


def test_a_cancelled_item_is_not_claimed_and_a_stale_finish_does_not_revive_it(store: Store) -> None:
    with store.transaction() as session:
        w = write("L1", writeback="Contacted")
        repo.save_records(session, "crm", "Lead", [w], T0)
        assert w.record_id is not None
        [claimed] = repo.claim_due(session, "crm", "Lead", T0, 10)
        item_id, version = claimed.id, claimed.version
    with store.transaction() as session:
        repo.cancel_writebacks(session, [w.record_id], T0 + SECOND)
    with store.transaction() as session:
        assert repo.claim_due(session, "crm", "Lead", T0 + SECOND, 10) == []
        assert repo.finish_item(session, item_id, version, "done", T0 + SECOND) is False
        assert repo.outbox_counts(session, "crm", "Lead") == {"cancelled": 1}


# --- events --------------------------------------------------------------------------------------
def test_events_with_the_same_key_are_taken_once(store: Store) -> None:
    rows = [
        {"object": "Lead", "external_id": "L1", "type": "email_opened", "at": T0, "dedupe_key": "k1"},
        {"object": "Lead", "external_id": "L1", "type": "email_sent", "at": T0, "dedupe_key": "k2"},
    ]
    with store.transaction() as session:
        assert repo.insert_new_events(session, "crm", rows, T0) == {"k1", "k2"}
    with store.transaction() as session:
        assert repo.insert_new_events(session, "crm", rows, T0 + SECOND) == set()
        third = {**rows[0], "dedupe_key": "k3"}
        assert repo.insert_new_events(session, "crm", [rows[1], third], T0 + SECOND) == {"k3"}
    with store.transaction() as session:
        assert session.execute(text("SELECT count(*) FROM events")).scalar_one() == 3


def history_of(store: Store, obj: str, external_id: str) -> list[tuple[Any, ...]]:
    with store.transaction() as session:
        record = repo.get_record(session, "crm", obj, external_id)
        assert record is not None
        return [(t.from_stage, t.to_stage, t.cause, t.suppressed) for t in repo.history(session, record.id)]


def test_the_same_event_twice_moves_and_records_once(store: Store, engine: Engine, config: Config) -> None:
    lead = config.object("crm", "Lead")
    engine.apply_page(lead, Page([RemoteRecord("L1", "Closed Lost", T0)], Cursor(T0, "L1")), T0)
    opened = RemoteEvent("L1", "email_opened", T0 + SECOND, "hs:engagement:1")  # suppressed: Lost, no reactivate
    first = engine.apply_events(lead, [opened], T0 + SECOND)
    again = engine.apply_events(lead, [opened], T0 + 2 * SECOND)
    assert (first.new, again.new) == (1, 0)
    assert history_of(store, "Lead", "L1") == [(None, "Lost", "external", False), ("Lost", "New", "event", True)]


def test_the_same_event_twice_in_one_batch_is_taken_once(store: Store, engine: Engine, config: Config) -> None:
    lead = config.object("crm", "Lead")
    engine.apply_page(lead, Page([RemoteRecord("L1", "Closed Lost", T0)], Cursor(T0, "L1")), T0)
    opened = RemoteEvent("L1", "email_opened", T0 + SECOND, "hs:engagement:1")
    stats = engine.apply_events(lead, [opened, opened], T0 + SECOND)
    assert stats.new == 1
    assert history_of(store, "Lead", "L1") == [(None, "Lost", "external", False), ("Lost", "New", "event", True)]


# --- cursors and crash safety --------------------------------------------------------------------
def test_the_cursor_commits_with_its_page(store: Store) -> None:
    with store.transaction() as session:
        repo.save_records(session, "crm", "Lead", [write("L0")], T0)
        repo.save_cursor(session, "crm", "Lead", T0, "L0", T0)
    with pytest.raises(Boom), store.transaction() as session:
        repo.save_records(session, "crm", "Lead", [write("L1", writeback="Contacted"), write("L2")], T0 + SECOND)
        repo.save_cursor(session, "crm", "Lead", T0 + SECOND, "L2", T0 + SECOND)
        raise Boom
    with store.transaction() as session:
        assert repo.get_cursor(session, "crm", "Lead") == (T0, "L0")
        assert sorted(repo.load_records(session, "crm", "Lead", ["L0", "L1", "L2"])) == ["L0"]
        assert session.execute(text("SELECT count(*) FROM transitions")).scalar_one() == 1
        assert session.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 0


def snapshot(store: Store, obj: str) -> dict[str, Any]:
    """Everything the crash must not change, for one object: records, history, outbox, cursors."""
    with store.transaction() as session:
        table = repo.RECORDS
        ids = [r for (r,) in session.execute(select(table.c.external_id).where(table.c.object == obj))]
        assert len(ids) == len(set(ids)), "a record stored twice"
        out: dict[str, Any] = {}
        for external_id, record in sorted(repo.load_records(session, "crm", obj, ids).items()):
            history = [
                (t.at, t.from_stage, t.to_stage, t.cause, t.detail, t.rule, t.suppressed, t.reason)
                for t in session.scalars(
                    select(TransitionRow).where(TransitionRow.record_id == record.id).order_by(TransitionRow.id)
                )
            ]
            outbox = [
                (i.status, i.state)
                for i in session.scalars(
                    select(OutboxItem).where(OutboxItem.record_id == record.id).order_by(OutboxItem.id)
                )
            ]
            out[external_id] = (record.state, history, outbox)
        out["(cursors)"] = (repo.get_cursor(session, "crm", obj), repo.get_cursor(session, "crm", obj, "events"))
        return out


def crash_pages(obj: str) -> tuple[list[Page], list[list[RemoteEvent]]]:
    """Three pages (records in page 0 change in pages 1 and 2) and two batches of activity."""
    t = [T0 + timedelta(minutes=m) for m in range(6)]
    p0 = Page([RemoteRecord(f"L{i}", "Open", t[0]) for i in range(6)], Cursor(t[0], "L5"))
    p1 = Page(
        [RemoteRecord(i, status, t[2]) for i, status in (("L0", "Contacted"), ("L1", "Closed Won"), ("L6", "Odd"))],
        Cursor(t[2], "L6"),
    )
    p2 = Page(
        [RemoteRecord(i, status, t[4]) for i, status in (("L2", "Closed Lost"), ("L3", "Recycled"), ("L7", "Open"))],
        Cursor(t[4], "L7"),
    )
    e1 = [
        RemoteEvent("L4", "email_replied", t[1], f"{obj}:e1"),  # New -> Working, queues Contacted
        RemoteEvent("L5", "meeting_booked", t[1], f"{obj}:e2"),  # New -> Won, queues Closed Won
    ]
    e2 = [
        RemoteEvent("L4", "email_opened", t[3], f"{obj}:e3"),  # Working -> New: would move backwards
        RemoteEvent("L5", "email_opened", t[3], f"{obj}:e4"),  # Won, set by trigger -> New: backwards
        RemoteEvent("L1", "email_opened", t[3], f"{obj}:e5"),  # Won, set by external: sticky
    ]
    return [p0, p1, p2], [e1, e2]


def test_a_crash_mid_page_then_a_restarted_pull_duplicates_nothing(
    store: Store, engine: Engine, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean, crashed = config.object("crm", "Contact"), config.object("crm", "Lead")

    def events_cursor(batch: Sequence[RemoteEvent]) -> Cursor:
        return Cursor(batch[-1].at, batch[-1].key.split(":")[1])  # the same in both objects

    # The clean run.
    (p0, p1, p2), (e1, e2) = crash_pages("Contact")
    for step in (p0, e1, p1, e2, p2):
        if isinstance(step, Page):
            engine.apply_page(clean, step, step.cursor.modified_at or T0)
        else:
            engine.apply_events(clean, step, step[-1].at, events_cursor(step))

    # The same, with a kill after the records are written and before the cursor is: page 2 and the
    # second activity batch each die once, then the restarted pulls re-read from the stored cursor.
    (p0, p1, p2), (e1, e2) = crash_pages("Lead")
    real_save_cursor = repo.save_cursor

    def dying(*args: Any, **kwargs: Any) -> None:
        raise Boom("killed after the records were written")

    engine.apply_page(crashed, p0, p0.cursor.modified_at or T0)
    engine.apply_events(crashed, e1, e1[-1].at, events_cursor(e1))
    engine.apply_page(crashed, p1, p1.cursor.modified_at or T0)
    before_e2 = snapshot(store, "Lead")
    monkeypatch.setattr(repo, "save_cursor", dying)
    with pytest.raises(Boom):
        engine.apply_events(crashed, e2, e2[-1].at, events_cursor(e2))
    monkeypatch.setattr(repo, "save_cursor", real_save_cursor)
    assert snapshot(store, "Lead") == before_e2, "a killed batch left something behind"
    engine.apply_events(crashed, e1 + e2, e2[-1].at, events_cursor(e2))  # the restart re-reads e1 too
    engine.apply_events(crashed, e2, e2[-1].at, events_cursor(e2))  # and a later lookback e2 again

    before_p2 = snapshot(store, "Lead")
    monkeypatch.setattr(repo, "save_cursor", dying)
    with pytest.raises(Boom):
        engine.apply_page(crashed, p2, p2.cursor.modified_at or T0)
    monkeypatch.setattr(repo, "save_cursor", real_save_cursor)
    assert snapshot(store, "Lead") == before_p2, "a killed page left something behind"
    assert engine.cursor(crashed) == p1.cursor
    for page in (p1, p2, p2):  # restart: the lookback re-reads page 1, then page 2; later page 2 again
        engine.apply_page(crashed, page, page.cursor.modified_at or T0)

    got, want = snapshot(store, "Lead"), snapshot(store, "Contact")
    assert got == want
    # The run did what it says: moves, suppressions, write-backs and quarantines are all in there.
    assert want["L4"][1][-1][6] is True and want["L5"][2] == [("Closed Won", "pending")]
    assert want["L3"][0].quarantined == "Recycled"


# --- a real kill ---------------------------------------------------------------------------------
def _records_view(store: Store) -> dict[str, Any]:
    with store.transaction() as session:
        table = repo.RECORDS
        ids = [r for (r,) in session.execute(select(table.c.external_id))]
        assert len(ids) == len(set(ids)), "a record stored twice"
        out: dict[str, Any] = {}
        for external_id, record in sorted(repo.load_records(session, "crm", "Lead", ids).items()):
            out[external_id] = (
                record.state,
                [
                    (t.at, t.from_stage, t.to_stage, t.cause, t.detail, t.suppressed, t.reason)
                    for t in repo.history(session, record.id)
                ],
            )
        out["(cursor)"] = repo.get_cursor(session, "crm", "Lead")
        return out


@pytest.fixture
def kill_config(tmp_path: Path) -> Iterator[tuple[Path, SyncedObject, Config]]:
    path = _kill_target.write_config(tmp_path)
    config = load_config(path, environ={})
    yield path, config.object("crm", "Lead"), config


def _run_and_kill(url: str, config_path: Path, after: int, rng: random.Random) -> bool:
    """Start a pull, SIGKILL it once `after` more pages committed (plus a random moment); True if it was killed."""
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, str(root / "tests" / "_kill_target.py"), url, str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        for line in child.stdout:
            if line.startswith("finished"):
                break
            if int(line.split()[1]) >= after:
                # Most of a pull's time is spent inside a page's transaction: kill somewhere in one.
                time.sleep(rng.uniform(0, 0.02))
                os.kill(child.pid, signal.SIGKILL)
                break
        child.wait(timeout=60)
        error = child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    if child.returncode == -signal.SIGKILL:
        return True
    assert child.returncode == 0, error
    return False


def test_a_real_kill_mid_pull_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, kill_config: tuple[Path, SyncedObject, Config]
) -> None:
    config_path, synced, config = kill_config
    all_pages = _kill_target.pages()

    # The clean run.
    clean = open_store(f"sqlite:///{tmp_path}/clean.db")
    try:
        applied = _kill_target.resume(clean, synced, Engine(config, clean, sources={}))
        assert applied == len(all_pages)
        want = _records_view(clean)
    finally:
        clean.close()

    # Killed twice at random points, resumed from the stored cursor each time.
    url = f"sqlite:///{tmp_path}/killed.db"
    rng = random.Random(7)
    kills = sum(_run_and_kill(url, config_path, after, rng) for after in (3, rng.randint(10, 40)))
    assert kills == 2, "the pull finished before it could be killed: make the run longer"
    killed = open_store(url)
    try:
        cursor = Engine(config, killed, sources={}).cursor(synced)
        assert cursor != all_pages[-1].cursor
        _kill_target.resume(killed, synced, Engine(config, killed, sources={}))
        got = _records_view(killed)
    finally:
        killed.close()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    # Records change many times in this run, so duplicated or lost transitions would show.
    assert sum(len(v[1]) for k, v in want.items() if k != "(cursor)") > 1000
