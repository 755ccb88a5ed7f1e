"""The pull's fast path: reads that only bring the store's own state back are judged on the raw rows.

`record_writes.read_back` must conclude exactly what `decide_remote` concludes, on both databases
(their drivers hand back rows in different forms), and a stamp-only read must write the stamp and
nothing else.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from connector.config import Config, load_config
from connector.engine import Engine
from connector.mapping import InactiveTrigger
from connector.record_writes import decide_remote, next_timer_at, read_back, resend_stage
from connector.rules import RecordState, SetBy, next_inactive_deadline
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store import repo
from connector.store.db import SQLITE_PAGE_SIZE, Store, make_engine, open_store
from tests.support import offline_config

MAPPING = """\
stages:
  - {{name: New, category: in_progress}}
  - {{name: Working, category: in_progress}}
  - {{name: Won, category: succeeded, sticky: true}}
  - {{name: Lost, category: not_succeeded}}
statuses:
  Open: New
  Contacted: Working
  Closed Won: Won
  Closed Lost: Lost
triggers:
  - {{name: quiet, on: inactive, after: {after}, from: [Working], to: Lost}}
  - {{name: stale, on: inactive, after: 30d, from_category: [in_progress], to: Lost}}
"""

T0 = datetime(2024, 2, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
STATUSES = ("Open", "Contacted", "Closed Won", "Closed Lost")


def make_config(folder: Path, after: str = "14d") -> Config:
    folder.mkdir(exist_ok=True)
    path = offline_config(folder, MAPPING.format(after=after), object_settings=", fields: [Region]")
    return load_config(path, environ={})


def remote(i: int, status: str | None, at: datetime, **kw: Any) -> RemoteRecord:
    return RemoteRecord(f"00Q{i:03d}", status, at, **{"owner": "005A", "fields": {"Region": "EU"}, **kw})


def page(records: list[RemoteRecord]) -> Page:
    return Page(records, Cursor(records[-1].modified_at, records[-1].id))


def seed(engine: Engine, config: Config, count: int) -> None:
    synced = config.object("crm", "Lead")
    engine.apply_page(synced, page([remote(i, STATUSES[i % 4], T0) for i in range(count)]), NOW)


def rows_of(store: Store, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    with store.transaction() as session:
        return repo.load_rows(session, "crm", "Lead", ids)


def test_read_back_concludes_what_decide_remote_concludes(store: Store, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    seed(Engine(config, store, {}), config, 4)
    mapping = config.object("crm", "Lead").mapping
    rows = rows_of(store, [f"00Q{i:03d}" for i in range(4)])
    verdicts: set[str | None] = set()
    reads = itertools.product(
        range(4),
        ("same", "other", None),  # status
        ("005A", "005B"),  # owner
        ({"Region": "EU"}, {"Region": "US"}, {}),  # fields
        (T0 - timedelta(seconds=1), T0, T0 + timedelta(seconds=1)),  # stamp: stale, the same, newer
        ((False, False), (True, False), (False, True)),  # deleted, converted
    )
    for i, status, owner, fields, at, (deleted, converted) in reads:
        row = rows[f"00Q{i:03d}"]
        read_status = STATUSES[i % 4] if status == "same" else STATUSES[(i + 1) % 4] if status else None
        read = remote(i, read_status, at, owner=owner, fields=fields, deleted=deleted, converted=converted)
        verdict = read_back(row, read, mapping)
        verdicts.add(verdict)
        stored = repo.stored_from_row(row)
        write = decide_remote(stored, read, mapping)
        if verdict == "same":
            assert write is None, read
        elif verdict == "stamp":
            assert write is not None and write.stamp_only, read
            assert (write.transitions, write.writeback, write.cancel_writeback) == ([], None, False)
            assert (write.state, write.owner, write.fields) == (stored.state, stored.owner, stored.fields)
            assert (write.converted, write.deleted, write.merged_into) == (stored.converted, False, None)
            assert write.next_timer_at == repo.utc(row[repo.R_NEXT_TIMER_AT])
            assert write.remote_modified_at == at
    # The common reads do take the fast path (else this test would check nothing).
    assert verdicts == {"same", "stamp", None}


def test_a_read_of_the_store_s_own_state_writes_only_the_newer_stamp(store: Store, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    engine = Engine(config, store, {})
    synced = config.object("crm", "Lead")
    seed(engine, config, 4)
    ids = [f"00Q{i:03d}" for i in range(4)]
    before = rows_of(store, ids)
    later = T0 + timedelta(hours=1)
    stats = engine.apply_page(synced, page([remote(i, STATUSES[i % 4], later) for i in range(4)]), NOW + timedelta(1))
    assert (stats.records, stats.changed, stats.transitions) == (4, 0, 0)
    after = rows_of(store, ids)
    for external_id in ids:
        old, new = list(before[external_id]), list(after[external_id])
        assert repo.utc(new[repo.R_REMOTE_MODIFIED_AT]) == later
        old[repo.R_REMOTE_MODIFIED_AT] = new[repo.R_REMOTE_MODIFIED_AT] = None
        assert old == new  # nothing else moved
    with store.transaction() as session:
        count = session.execute(text("SELECT count(*) FROM transitions")).scalar_one()
        updated = session.execute(text("SELECT updated_at FROM records WHERE external_id = '00Q000'")).scalar_one()
    assert count == 4  # the first sync's four, no more
    assert repo.utc(updated) == NOW + timedelta(1)
    # The stamp was recorded: a read older than it (a lagging replica) changes nothing (rule 5).
    stale = later - timedelta(minutes=1)
    engine.apply_page(synced, page([remote(0, "Closed Lost", stale)]), NOW + timedelta(2))
    with store.transaction() as session:
        assert repo.load_records(session, "crm", "Lead", ["00Q000"])["00Q000"].state.stage == "New"


def test_a_timer_the_mapping_no_longer_gives_is_rewritten_by_the_next_read(store: Store, tmp_path: Path) -> None:
    old = make_config(tmp_path / "old", after="14d")
    seed(Engine(old, store, {}), old, 2)  # 00Q001 is Working: the 14-day timer, from the baseline (NOW)
    assert repo.utc(rows_of(store, ["00Q001"])["00Q001"][repo.R_NEXT_TIMER_AT]) == NOW + timedelta(days=14)
    new = make_config(tmp_path / "new", after="7d")
    engine = Engine(new, store, {})
    engine.apply_page(new.object("crm", "Lead"), page([remote(1, "Contacted", T0 + timedelta(hours=1))]), NOW)
    assert repo.utc(rows_of(store, ["00Q001"])["00Q001"][repo.R_NEXT_TIMER_AT]) == NOW + timedelta(days=7)


def test_next_timer_at_is_the_rules_deadline(tmp_path: Path) -> None:
    mapping = make_config(tmp_path).object("crm", "Lead").mapping
    assert any(isinstance(t, InactiveTrigger) for t in mapping.triggers)
    instants = (None, T0, T0 + timedelta(days=2))
    for stage, activity, entered, decided in itertools.product(
        (None, "New", "Working", "Won", "Lost", "Gone"), instants, instants, instants
    ):
        state = RecordState(stage=stage, set_by=SetBy.EXTERNAL, stage_entered_at=entered, last_activity_at=activity,
                            inactive_decided_at=decided)
        expected = None if decided is not None and decided == state.inactive_since() else next_inactive_deadline(
            state, mapping
        )
        assert next_timer_at(state, mapping) == expected, state


def test_the_store_settings_the_hot_path_relies_on(store: Store) -> None:
    with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            options = connection.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'records'")).scalar()
            assert "fillfactor=85" in (options or [])
        else:
            assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 10000
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL, under WAL


def test_a_new_connection_gets_the_pragmas() -> None:
    engine = make_engine("sqlite:///:memory:")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 10000
    finally:
        engine.dispose()


def test_our_landed_write_under_another_stage_sends_that_stage_s_status_unless_refused_or_unmapped(
    tmp_path: Path,
) -> None:
    mapping = make_config(tmp_path).object("crm", "Lead").mapping

    def landed(stage: str, **kw: Any) -> repo.RecordWrite:
        # The CRM holds Contacted, ours from before a kill; the stage was set since.
        state = RecordState(stage=stage, set_by=SetBy.IMPORT, remote_status="Contacted", stage_entered_at=T0)
        write = repo.RecordWrite("00Q001", 1, state)
        resend_stage(write, mapping, **kw)
        return write

    assert landed("New", pending=False).writeback == "Open"
    assert landed("Working", pending=False).writeback is None  # the CRM holds this stage's status already
    assert landed("New", pending=True).writeback is None  # the pending item goes out anyway
    assert landed("New", pending=False, dead={"Open"}).writeback is None  # refused: the admin's to re-queue
    # A stage the mapping no longer has (it was edited since): no status of ours to send, and no error.
    assert landed("Retired", pending=False).writeback is None


def test_a_new_sqlite_store_gets_small_pages_and_an_older_store_keeps_its_own(tmp_path: Path) -> None:
    import sqlite3

    new = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        with new.engine.connect() as connection:
            assert connection.execute(text("PRAGMA page_size")).scalar() == SQLITE_PAGE_SIZE == 2048
    finally:
        new.close()
    # A store written by an earlier version, with SQLite's default 4 KiB pages: opening it must neither
    # fail nor try to rewrite it; the engine works on it as before.
    older = tmp_path / "older.db"
    raw = sqlite3.connect(older)
    raw.execute("PRAGMA page_size=4096")
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE earlier (x)")
    raw.commit()
    raw.close()
    store = open_store(f"sqlite:///{older}")
    try:
        config = make_config(tmp_path)
        Engine(config, store, {}).apply_page(
            config.object("crm", "Lead"), page([remote(1, "Contacted", T0 + timedelta(hours=1))]), NOW
        )
        with store.engine.connect() as connection:
            assert connection.execute(text("PRAGMA page_size")).scalar() == 4096
        assert rows_of(store, ["00Q001"])["00Q001"][repo.R_REMOTE_STATUS] == "Contacted"
    finally:
        store.close()


def test_a_new_record_already_inserted_by_another_writer_is_updated_not_refused(store: Store) -> None:
    state = RecordState(stage="New", set_by=SetBy.EXTERNAL, remote_status="Open", stage_entered_at=T0)
    with store.transaction() as session:
        repo.save_records(session, "crm", "Lead", [repo.RecordWrite("00Q1", None, state)], T0)
    moved = RecordState(stage="Working", set_by=SetBy.EXTERNAL, remote_status="Contacted", stage_entered_at=NOW)
    # The page read found neither 00Q1 nor 00Q2; meanwhile 00Q1 was inserted (as above).
    writes = [repo.RecordWrite("00Q2", None, state), repo.RecordWrite("00Q1", None, moved)]
    with store.transaction() as session:
        repo.save_records(session, "crm", "Lead", writes, NOW)
    with store.transaction() as session:
        records = repo.load_records(session, "crm", "Lead", ["00Q1", "00Q2"])
        count = session.execute(text("SELECT count(*) FROM records")).scalar_one()
    assert count == 2
    assert records["00Q1"].state == moved and records["00Q2"].state == state
    assert [w.record_id for w in writes] == [records["00Q2"].id, records["00Q1"].id]
