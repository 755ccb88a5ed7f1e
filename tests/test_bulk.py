"""The hot path's driver SQL writes what SQLAlchemy's typed statements wrote, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from connector.rules import RecordState, SetBy
from connector.store import repo
from connector.store.bulk import sqlite_time
from connector.store.db import Store
from connector.store.schema import Record

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "moment",
    [NOW, datetime(2026, 3, 1, 14, 0, 0, 123, tzinfo=timezone(timedelta(hours=2))), datetime(999, 1, 1, tzinfo=UTC)],
)
def test_sqlite_text_is_sqlalchemys(moment: datetime) -> None:
    typed = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert typed is not None
    assert sqlite_time(moment) == typed(moment.astimezone(UTC).replace(tzinfo=None))


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        sqlite_time(datetime(2026, 1, 1))  # noqa: DTZ001


def test_written_rows_read_back_through_the_orm(store: Store) -> None:
    state = RecordState(stage="Working", set_by=SetBy.EXTERNAL, remote_status="Working - Contacted",
                        stage_entered_at=NOW - timedelta(days=1))
    writes = [
        repo.RecordWrite("00Q1", None, state, fields={"Industry": "Retail"}, owner="005A", next_timer_at=NOW),
        repo.RecordWrite("00Q2", None, state, deleted=True, remote_modified_at=NOW, merged_into="00Q9"),
    ]
    with store.transaction() as session:
        repo.save_records(session, "sfdc", "Lead", writes, NOW)
    assert all(w.record_id for w in writes)
    moved = RecordState(stage="New", set_by=SetBy.MANUAL, remote_status="Open", stage_entered_at=NOW)
    with store.transaction() as session:
        repo.save_records(session, "sfdc", "Lead", [repo.RecordWrite("00Q2", writes[1].record_id, moved)], NOW)
    with store.transaction() as session:
        rows = {r.external_id: r for r in session.scalars(select(Record))}
        loaded = repo.load_records(session, "sfdc", "Lead", ["00Q1", "00Q2"])
    first, second = rows["00Q1"], rows["00Q2"]
    assert (first.fields, first.owner, first.next_timer_at, first.stage_entered_at, first.deleted) == (
        {"Industry": "Retail"}, "005A", NOW, NOW - timedelta(days=1), False
    )
    assert first.merged_into is None
    assert (second.stage, second.set_by, second.fields, second.deleted, second.remote_modified_at) == (
        "New", "manual", None, False, None
    )
    assert second.merged_into is None  # the second write says nothing of a merge
    assert second.updated_at == NOW
    assert loaded["00Q1"].state == state and loaded["00Q2"].state == moved


def test_instants_in_any_offset_are_stored_to_the_microsecond(store: Store) -> None:
    # PostgreSQL gets them as array literals formatted by the store, SQLite as SQLAlchemy's text.
    odd = datetime(2026, 3, 1, 14, 0, 0, 123, tzinfo=timezone(timedelta(hours=2)))
    state = RecordState(stage="New", set_by=SetBy.EXTERNAL, stage_entered_at=odd)
    write = repo.RecordWrite("00Q1", None, state, remote_modified_at=odd, next_timer_at=odd + timedelta(days=3))
    with store.transaction() as session:
        repo.save_records(session, "sfdc", "Lead", [write], NOW)
    with store.transaction() as session:
        repo.save_records(session, "sfdc", "Lead", [], NOW + timedelta(hours=1),
                          stamps=[(write.record_id or 0, odd + timedelta(microseconds=1))])
    with store.transaction() as session:
        row = session.scalars(select(Record)).one()
    assert (row.stage_entered_at, row.next_timer_at) == (odd, odd + timedelta(days=3))
    assert (row.remote_modified_at, row.updated_at) == (odd + timedelta(microseconds=1), NOW + timedelta(hours=1))


def test_a_naive_stamp_is_refused(store: Store) -> None:
    write = repo.RecordWrite("00Q1", None, RecordState(stage="New"))
    with store.transaction() as session:
        repo.save_records(session, "sfdc", "Lead", [write], NOW)
    with pytest.raises(ValueError, match="naive"), store.transaction() as session:
        repo.save_records(session, "sfdc", "Lead", [], NOW, stamps=[(write.record_id or 0, datetime(2026, 1, 1))])  # noqa: DTZ001
