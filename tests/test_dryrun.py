"""The throwaway copy behind every dry run, on SQLite and PostgreSQL: it sees its own work, and none of
it reaches the real store or the CRM."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from connector.config import load_config
from connector.dryrun import dry_run
from connector.engine import Engine
from connector.sources.base import Cursor, Page, RemoteRecord, StatusWrite, WriteOutcome
from connector.store import repo
from connector.store.db import Store
from connector.store.schema import OutboxItem, TransitionRow
from connector.writeback import Drain
from tests.support import SMALL_MAPPING, offline_config

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Crm:
    """The CRM's edge: what it holds, and the writes it took."""

    name = "crm"

    def __init__(self) -> None:
        self.writes: list[StatusWrite] = []
        self.records: dict[str, str] = {}

    def read_statuses(self, obj: str, record_ids: Sequence[str]) -> dict[str, RemoteRecord]:
        return {i: RemoteRecord(i, self.records[i], T0) for i in record_ids if i in self.records}

    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        self.writes.extend(writes)
        return [WriteOutcome(w.record_id) for w in writes]


def counts(store: Store) -> tuple[int, int]:
    with store.transaction() as session:
        transitions = session.execute(select(func.count()).select_from(TransitionRow)).scalar_one()
        items = session.execute(select(func.count()).select_from(OutboxItem)).scalar_one()
        return int(transitions), int(items)


def test_a_dry_run_sees_its_own_work_and_leaves_nothing_behind(store: Store, tmp_path: Path) -> None:
    config = load_config(offline_config(tmp_path, SMALL_MAPPING), environ={})
    synced = config.object("crm", "Lead")
    crm = Crm()
    crm.records = {"a": "Open", "b": "Open"}
    engine = Engine(config, store, {"crm": crm})  # type: ignore[dict-item]
    page = Page([RemoteRecord(i, "Open", T0) for i in ("a", "b")], Cursor(T0, "b"))
    engine.apply_page(synced, page, T0)
    before = counts(store)
    with store.transaction() as session:
        cursor_before = repo.get_cursor(session, "crm", "Lead")

    later = T0 + timedelta(hours=1)
    with dry_run(engine) as run:
        run.engine.feed_event(synced, "a", "email_replied", later, later)
        # A second unit of work sees the first one's move, as the real run would.
        with run.engine.store.transaction() as session:
            assert repo.get_record(session, "crm", "Lead", "a").state.stage == "Working"  # type: ignore[union-attr]
        stats = Drain(run.engine.store, run.engine.sources["crm"], config.model.writeback).run(synced, later)
        assert stats.done == 1
        assert [(m.id, m.from_stage, m.to_stage, m.rule) for m in run.moves()] == [("a", "New", "Working", "replied")]
        assert [(w.record_id, w.status) for w in run.writes("crm", "Lead")] == [("a", "Contacted")]
        assert run.queued("crm", "Lead") == []

    # Nothing reached the CRM or the store.
    assert crm.writes == []
    assert counts(store) == before
    with store.transaction() as session:
        assert repo.get_record(session, "crm", "Lead", "a").state.stage == "New"  # type: ignore[union-attr]
        assert repo.get_cursor(session, "crm", "Lead") == cursor_before
    # And the real store still works as before.
    engine.feed_event(synced, "a", "email_replied", later, later)
    with store.transaction() as session:
        assert repo.get_record(session, "crm", "Lead", "a").state.stage == "Working"  # type: ignore[union-attr]
