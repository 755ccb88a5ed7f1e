"""What a cycle records about an object's health, on SQLite and PostgreSQL, with a CRM at the edge that
fails in the ways real ones do: activity that cannot be read, a write the configuration forbids, a pull
that fails while the write-back has nothing to do."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.config import load_config
from connector.cycle import Jobs
from connector.engine import Engine
from connector.sources.base import ApiUsage, Cursor, EventPage, Page, RemoteRecord, StatusWrite, WriteOutcome
from connector.sources.errors import Action, CrmError
from connector.status import read_status, status
from connector.store.db import Store
from connector.store.glance import open_glance
from tests.support import SMALL_MAPPING, offline_config

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DENIED = "INVALID_TYPE: sObject type 'Task' is not supported."
READ_ONLY = "INVALID_FIELD_FOR_INSERT_UPDATE: Unable to create/update fields: Status."


class Crm:
    """A CRM edge with switches for its failures."""

    name = "crm"

    def __init__(self) -> None:
        self.records = {"a": "Open", "b": "Open"}
        self.activity_denied = False
        self.status_read_only = False
        self.pull_fails = False
        self.written: list[StatusWrite] = []

    def pull(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[Page]:
        if self.pull_fails:
            raise CrmError(Action.ADMIN, "INVALID_SESSION_ID: Session expired or invalid", status=401)
        yield Page([RemoteRecord(i, s, T0) for i, s in sorted(self.records.items())], Cursor(T0, "b"))

    def pull_events(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[EventPage]:
        if self.activity_denied:
            raise CrmError(Action.ADMIN, DENIED, status=400)
        yield EventPage([], cursor)

    def read_statuses(self, obj: str, record_ids: Sequence[str]) -> dict[str, RemoteRecord]:
        return {i: RemoteRecord(i, self.records[i], T0) for i in record_ids}

    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        if self.status_read_only:
            return [WriteOutcome(w.record_id, CrmError(Action.ADMIN, READ_ONLY, status=400)) for w in writes]
        self.written.extend(writes)
        for write in writes:
            self.records[write.record_id] = write.status
        return [WriteOutcome(w.record_id) for w in writes]

    def usage(self) -> ApiUsage:
        return ApiUsage()


@pytest.fixture
def rig(store: Store, tmp_path: Path) -> tuple[Engine, Crm, Jobs]:
    config = load_config(offline_config(tmp_path, SMALL_MAPPING), environ={})
    crm = Crm()
    engine = Engine(config, store, {"crm": crm})  # type: ignore[dict-item]
    engine.clock = lambda: T0
    return engine, crm, Jobs(engine)


def shown(engine: Engine, now: datetime) -> dict[str, object]:
    objects = status(engine, now)["objects"]
    assert isinstance(objects, list) and len(objects) == 1
    # `connector status` opens the store on its own (sqlite3 on a SQLite file): the same answer.
    glance = open_glance(engine.store.engine.url.render_as_string(hide_password=False))
    try:
        assert read_status(glance, engine.objects(), now)["objects"] == objects
    finally:
        glance.close()
    result: dict[str, object] = objects[0]
    return result


def test_activity_that_cannot_be_read_degrades_the_object_and_nothing_else(rig: tuple[Engine, Crm, Jobs]) -> None:
    engine, crm, jobs = rig
    synced = engine.config.object("crm", "Lead")
    crm.activity_denied = True
    outcome = jobs.once(synced, T0)
    assert outcome.error is None and outcome.degraded is not None and DENIED in outcome.degraded
    assert outcome.pulled.records == 2  # the records were still pulled
    engine.set_stage(synced, "a", "Working", T0)
    outcome = jobs.once(synced, T0 + timedelta(seconds=10))  # within the back-off: activity not tried
    assert outcome.drained.done == 1 and crm.records["a"] == "Contacted"  # write-back still runs
    data = shown(engine, T0 + timedelta(seconds=10))
    assert data["state"] == "degraded"
    assert data["problems"] == [{"kind": "activity", "message": f"activity cannot be read: {DENIED} (HTTP 400)"}]
    # Once the admin grants access, the next try (after its back-off) clears the state.
    crm.activity_denied = False
    assert jobs.once(synced, T0 + timedelta(minutes=1)).degraded is None
    assert shown(engine, T0 + timedelta(minutes=1))["state"] == "ok"


def test_a_write_the_configuration_forbids_pauses_write_back_with_one_error(rig: tuple[Engine, Crm, Jobs]) -> None:
    engine, crm, jobs = rig
    synced = engine.config.object("crm", "Lead")
    jobs.once(synced, T0)
    for rid in ("a", "b"):
        engine.set_stage(synced, rid, "Working", T0)
    crm.status_read_only = True
    outcome = jobs.once(synced, T0 + timedelta(minutes=1))
    assert outcome.drained.paused is not None and READ_ONLY in outcome.drained.paused
    assert "Lead.Status" in outcome.drained.paused and outcome.drained.dead == 0 and outcome.failed
    data = shown(engine, T0 + timedelta(minutes=1))
    assert data["state"] == "paused" and data["outbox_pending"] == 2 and data["outbox_dead"] == 0
    # Fixed by the admin: the next cycle's probe goes through and the rest follow.
    crm.status_read_only = False
    outcome = jobs.once(synced, T0 + timedelta(minutes=2))
    assert outcome.drained.done == 2 and outcome.drained.paused is None
    data = shown(engine, T0 + timedelta(minutes=2))
    assert data["state"] == "ok" and data["outbox_pending"] == 0


def test_a_failing_pull_stays_failing_while_the_write_back_has_nothing_to_do(rig: tuple[Engine, Crm, Jobs]) -> None:
    engine, crm, jobs = rig
    synced = engine.config.object("crm", "Lead")
    outcome = jobs.once(synced, T0)
    crm.pull_fails = True
    outcome = jobs.once(synced, T0 + timedelta(minutes=1))
    assert outcome.error is not None
    jobs.drain(synced, T0 + timedelta(minutes=2), outcome)  # the daemon's write-back job, on its own
    assert shown(engine, T0 + timedelta(minutes=2))["state"] == "failing"
    crm.pull_fails = False
    jobs.once(synced, T0 + timedelta(minutes=3))
    assert shown(engine, T0 + timedelta(minutes=3))["state"] == "ok"
