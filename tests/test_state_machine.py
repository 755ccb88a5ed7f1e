"""Random sequences through the real store and engine, checked step by step against a reference model.

The model below is written from DESIGN.md "Rule semantics (the contract)", independently of
`connector.rules`: it knows the mapping only as plain tables. The machine drives the `Engine` (pages,
events, timers, manual sets, unlocks) and the real outbox `Drain` against a fake CRM, on SQLite and on
PostgreSQL, and after every step compares each record (stage, set_by, remote_status, quarantine,
clocks), its history and its pending outbox item with the model.

Where the code deliberately extends the contract (a trigger is held back on a quarantined record,
see test_rules.py), the model follows the code behind a `KNOWN_*` switch. The other switches stay
False: they name disagreements this model found and that are fixed; set one to True and the model
reproduces the old behaviour, which the tests at the end of this file then catch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import select, text

from connector.config import Config, SyncedObject, load_config
from connector.engine import Engine
from connector.errors import UsageError
from connector.rules import SetBy
from connector.sources.base import Cursor, Page, RemoteEvent, RemoteRecord, StatusWrite, WriteOutcome
from connector.store import repo
from connector.store.db import Store, open_store
from connector.store.schema import Base, OutboxItem, TransitionRow
from connector.writeback import Drain
from tests.support import offline_config

# True: the model follows a deliberate extension of the contract. False: a fixed disagreement.
KNOWN_QUARANTINE_BLOCKS_TRIGGERS = True
KNOWN_ONE_TIMER_STEP_PER_RUN = False
KNOWN_BATCH_KEEPS_A_CANCELLED_WRITEBACK = False

MAPPING = """\
stages:
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress}
  - {name: Meeting Set,  category: succeeded, sticky: true}
  - {name: Won,          category: succeeded}
  - {name: Unresponsive, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Meeting: Meeting Set
  Closed Won: Won
  No Response: Unresponsive
triggers:
  - {name: replied,    on: email_replied, from: [New], to: Working}
  - {name: booked,     on: meeting_booked, to: Meeting Set}
  - {name: won,        on: "custom:signed", from_category: [succeeded], to: Won}
  - {name: opened,     on: email_opened, to: New}
  - {name: came-back,  on: form_submitted, from_category: [not_succeeded], to: Working, reactivate: true}
  - {name: bounced,    on: email_bounced, to: Unresponsive}
  - {name: unsub,      on: unsubscribed, from_category: [not_succeeded], to: New}
  - {name: nudge,      on: inactive, after: 30d, from: [New], to: Working}
  - {name: gone-quiet, on: inactive, after: 14d, from: [Working], to: Unresponsive}
  - {name: stale,      on: inactive, after: 7d, from: [Meeting Set], to: Working}
overrides:
  forward_only: true
"""

# --- the contract, as plain tables ---------------------------------------------------------------
STAGES = ["New", "Working", "Meeting Set", "Won", "Unresponsive"]
CATEGORY = {"New": "in", "Working": "in", "Meeting Set": "ok", "Won": "ok", "Unresponsive": "not"}
STICKY = {"Meeting Set"}
STATUS_OF = {
    "New": "Open",
    "Working": "Contacted",
    "Meeting Set": "Meeting",
    "Won": "Closed Won",
    "Unresponsive": "No Response",
}
STAGE_OF = {s: stage for stage, s in STATUS_OF.items()}
FORWARD_ONLY = True


@dataclass(frozen=True)
class Trig:
    name: str
    on: str
    to: str
    from_stages: tuple[str, ...] | None = None
    from_category: tuple[str, ...] | None = None
    reactivate: bool = False
    after: timedelta | None = None

    def applies(self, stage: str) -> bool:
        if self.from_stages is not None and stage not in self.from_stages:
            return False
        return self.from_category is None or CATEGORY[stage] in self.from_category


DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
TRIGGERS = [
    Trig("replied", "email_replied", "Working", from_stages=("New",)),
    Trig("booked", "meeting_booked", "Meeting Set"),
    Trig("won", "custom:signed", "Won", from_category=("ok",)),
    Trig("opened", "email_opened", "New"),
    Trig("came-back", "form_submitted", "Working", from_category=("not",), reactivate=True),
    Trig("bounced", "email_bounced", "Unresponsive"),
    Trig("unsub", "unsubscribed", "New", from_category=("not",)),
    Trig("nudge", "inactive", "Working", from_stages=("New",), after=30 * DAY),
    Trig("gone-quiet", "inactive", "Unresponsive", from_stages=("Working",), after=14 * DAY),
    Trig("stale", "inactive", "Working", from_stages=("Meeting Set",), after=7 * DAY),
]
EVENTS = [
    "email_replied",
    "meeting_booked",
    "custom:signed",
    "email_opened",
    "form_submitted",
    "email_bounced",
    "unsubscribed",
    "call_logged",
]
UNMAPPED = ["Recycled", "Nurture"]
IDS = ["r1", "r2"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LOCKING = {"external", "manual", "import"}


@dataclass
class Model:
    """One record as the contract says it must be."""

    stage: str | None = None
    set_by: str | None = None
    remote: str | None = None
    quarantined: str | None = None
    entered: datetime | None = None
    activity: datetime | None = None
    decided: datetime | None = None  # the inactivity period whose end was already decided
    pending: str | None = None  # the status waiting in the outbox
    history: list[tuple[str | None, str | None, bool]] = field(default_factory=list)
    outbox_log: list[str | None] = field(default_factory=list)  # queue (a status) / cancel (None), in order

    def since(self) -> datetime | None:
        instants = [t for t in (self.activity, self.entered) if t is not None]
        return max(instants) if instants else None

    # rule 1
    def status_read(self, status: str, at: datetime) -> None:
        if status == self.remote:
            return  # an echo
        self.remote = status
        self.pending = None  # the CRM is authoritative: a pending write would overwrite a person's change
        target = STAGE_OF.get(status)
        if target is None:
            self.quarantined = status
            self.history.append((self.stage, self.stage, True))
            return
        self.quarantined = None
        self.set_by = "external"
        if target != self.stage:
            self.history.append((self.stage, target, False))
            self.stage, self.entered, self.decided = target, at, None

    def pulled(self, status: str, at: datetime) -> None:
        if self.pending is not None and status == self.pending != self.remote:
            # The CRM holds what our pending write-back carries: the code takes that as our write having
            # landed (its confirmation lost in a crash) and confirms it; `set_by` stays. The contract's
            # literal rule 1 would make it `external` (a person's change).
            self.remote, self.pending = status, None
            return
        self.status_read(status, at)

    # rule 2
    def trigger(self, trig: Trig, at: datetime) -> None:
        current = self.stage
        assert current is not None
        target = trig.to
        if target == current:  # a
            return
        suppressed = (
            (KNOWN_QUARANTINE_BLOCKS_TRIGGERS and self.quarantined is not None)
            or (current in STICKY and self.set_by in LOCKING)  # b
            or (CATEGORY[current] == "not" and not trig.reactivate)  # c
            or (
                FORWARD_ONLY
                and "not" not in (CATEGORY[current], CATEGORY[target])
                and STAGES.index(target) < STAGES.index(current)
            )  # d
        )
        if suppressed:
            self.history.append((current, target, True))
            return
        self.history.append((current, target, False))  # e
        self.stage, self.set_by, self.entered, self.decided = target, "trigger", at, None
        self._queue(STATUS_OF[target])

    def _queue(self, status: str) -> None:
        """Queue T's status; when the CRM already holds it, nothing to send and a pending write is stale."""
        self.pending = status if status != self.remote else None
        self.outbox_log.append(self.pending)

    def activity_event(self, event: str, at: datetime, baseline: datetime) -> None:
        if self.activity is None or at > self.activity:
            self.activity = at
        if self.stage is None or at < baseline:
            return  # rule 4: activity from before the first sync only counts as activity
        for trig in TRIGGERS:
            if trig.on == event and trig.applies(self.stage):
                self.trigger(trig, at)
                return

    def timers(self, now: datetime) -> None:
        for _ in range(1 if KNOWN_ONE_TIMER_STEP_PER_RUN else 10):
            since = self.since()
            if since is None or self.stage is None or self.decided == since:
                return
            for trig in TRIGGERS:
                if trig.after is not None and trig.applies(self.stage) and now - since >= trig.after:
                    self.decided = since
                    self.trigger(trig, since + trig.after)
                    break
            else:
                return

    # rule 3
    def manual(self, stage: str, by: str, now: datetime) -> None:
        self.history.append((self.stage, stage, False))
        if stage != self.stage:
            self.entered, self.decided = now, None
        self.stage, self.set_by = stage, by
        self.quarantined = None  # the code's choice: a person has decided the stage
        self._queue(STATUS_OF[stage])

    def unlock(self) -> None:
        self.history.append((self.stage, self.stage, False))
        self.set_by = "trigger"


@dataclass
class FakeCrm:
    """The CRM's side: the status each record holds now, and when it was last modified."""

    name: str = "crm"
    records: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    now: datetime = T0
    writes: list[StatusWrite] = field(default_factory=list)

    def read_statuses(self, obj: str, record_ids: Sequence[str]) -> dict[str, RemoteRecord]:
        return {i: RemoteRecord(i, *self.records[i]) for i in record_ids if i in self.records}

    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        for write in writes:
            self.writes.append(write)
            self.records[write.record_id] = (write.status, self.now)
        return [WriteOutcome(w.record_id) for w in writes]


def empty(store: Store) -> None:
    """Every table of the schema emptied (children first), as a fresh database would be."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with store.transaction() as session:
        if store.dialect == "postgresql":
            session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                session.execute(text(f"DELETE FROM {table}"))


def make_synced(folder: Path, mapping: str = MAPPING) -> tuple[Config, SyncedObject]:
    extra = "writeback: {enabled: true, conflict_check: true, max_attempts: 8}\n"
    config = load_config(offline_config(folder, mapping, mapping_file="lead.yaml", extra=extra), environ={})
    return config, config.object("crm", "Lead")


def stored_view(store: Store, synced: SyncedObject, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """What the store holds per record, in the model's terms; with `now`, also what the drain would claim."""
    with store.transaction() as session:
        records = repo.load_records(session, synced.source, synced.name, IDS)
        by_id = {r.id: external_id for external_id, r in records.items()}
        history: dict[str, list[tuple[str | None, str | None, bool]]] = {rid: [] for rid in records}
        for t in session.scalars(select(TransitionRow).order_by(TransitionRow.id)):
            history[by_id[t.record_id]].append((t.from_stage, t.to_stage, t.suppressed))
        pending: dict[str, list[str]] = {rid: [] for rid in records}
        for item in session.scalars(select(OutboxItem).where(OutboxItem.state == "pending")):
            pending[by_id[item.record_id]].append(item.status)
        out: dict[str, dict[str, Any]] = {}
        for external_id, record in records.items():
            s = record.state
            out[external_id] = {
                "stage": s.stage,
                "set_by": s.set_by.value if s.set_by else None,
                "remote": s.remote_status,
                "quarantined": s.quarantined,
                "entered": s.stage_entered_at,
                "activity": s.last_activity_at,
                "history": history[external_id],
                "pending": pending[external_id],
            }
        if now is not None:
            due = repo.claim_due(session, synced.source, synced.name, now, 100)
            out["(due)"] = {"items": sorted((i.external_id, i.status) for i in due)}
        return out


def model_view(model: Model) -> dict[str, Any]:
    return {
        "stage": model.stage,
        "set_by": model.set_by,
        "remote": model.remote,
        "quarantined": model.quarantined,
        "entered": model.entered,
        "activity": model.activity,
        "history": model.history,
        "pending": [model.pending] if model.pending else [],
    }


class ConnectorMachine(RuleBasedStateMachine):
    """Bound to a store and a config by `machine_for`."""

    store: ClassVar[Store]
    config: ClassVar[Config]
    synced: ClassVar[SyncedObject]

    def __init__(self) -> None:
        super().__init__()
        empty(self.store)  # a fresh database for every example
        self.engine = Engine(self.config, self.store, sources={})
        self.crm = FakeCrm()
        self.drain = Drain(self.store, self.crm, self.config.model.writeback)  # type: ignore[arg-type]
        self.now = T0
        self.baseline = T0
        self.model: dict[str, Model] = {}
        self.seen_events: set[tuple[str, str, datetime]] = set()
        self.seen_keys: set[str] = set()

    def _pull(self, rid: str) -> None:
        status, at = self.crm.records[rid]
        page = Page([RemoteRecord(rid, status, at)], Cursor(at, rid))
        self.engine.apply_page(self.synced, page, self.now)
        self.model.setdefault(rid, Model()).pulled(status, at)

    @initialize(first=st.sampled_from(list(STAGE_OF) + UNMAPPED), second=st.sampled_from(list(STAGE_OF)))
    def first_pull(self, first: str, second: str) -> None:
        self.baseline = self.now  # rule 4: the object's first sync fixes its baseline
        self.crm.records = {"r1": (first, self.now), "r2": (second, self.now)}
        for rid in IDS:
            self._pull(rid)

    @rule(rid=st.sampled_from(IDS), status=st.sampled_from(list(STAGE_OF) + UNMAPPED), pulled=st.booleans())
    def person_changes_the_crm(self, rid: str, status: str, pulled: bool) -> None:
        self.crm.records[rid] = (status, self.now)
        if pulled:
            self._pull(rid)

    @rule(rid=st.sampled_from(IDS), status=st.sampled_from(UNMAPPED))
    def person_sets_an_unmapped_status(self, rid: str, status: str) -> None:
        self.person_changes_the_crm(rid, status, pulled=True)

    @rule(rid=st.sampled_from(IDS))
    def pull(self, rid: str) -> None:
        self._pull(rid)

    @rule(
        rid=st.sampled_from(IDS),
        event=st.sampled_from(EVENTS),
        ago=st.sampled_from([timedelta(0), timedelta(hours=1), 3 * DAY, 20 * DAY]),
    )
    def activity(self, rid: str, event: str, ago: timedelta) -> None:
        at = self.now - ago
        self.engine.feed_event(self.synced, rid, event, at, self.now)
        if (rid, event, at) in self.seen_events:
            return  # the same activity again: taken once
        self.seen_events.add((rid, event, at))
        self.model[rid].activity_event(event, at, self.baseline)

    @rule(
        events=st.lists(
            st.tuples(st.sampled_from(IDS), st.sampled_from(EVENTS), st.integers(0, 3)),
            min_size=2,
            max_size=4,
            unique=True,  # the same event twice in a batch: see test_store.py
        )
    )
    def activity_batch(self, events: list[tuple[str, str, int]]) -> None:
        """One page of the activity feed: several events, for one record or more, applied in time order."""
        batch = []
        for rid, event, minutes in events:
            at = self.now - minutes * MINUTE
            batch.append(RemoteEvent(rid, event, at, f"feed:{rid}:{event}:{at.isoformat()}"))
        self.engine.apply_events(self.synced, batch, self.now)
        before = {rid: len(m.outbox_log) for rid, m in self.model.items()}
        for e in sorted(batch, key=lambda e: (e.at, e.key)):
            if e.key in self.seen_keys:
                continue
            self.seen_keys.add(e.key)
            self.model[e.record_id].activity_event(e.type, e.at, self.baseline)
        if KNOWN_BATCH_KEEPS_A_CANCELLED_WRITEBACK:
            for rid, model in self.model.items():
                actions = model.outbox_log[before[rid] :]
                queued = [a for a in actions if a is not None]
                # engine._merge: the last status queued in the batch wins over a later cancel.
                if queued:
                    model.pending = queued[-1]
                elif None in actions:
                    model.pending = None

    @rule(rid=st.sampled_from(IDS), stage=st.sampled_from(STAGES), by=st.sampled_from([SetBy.MANUAL, SetBy.IMPORT]))
    def set_stage(self, rid: str, stage: str, by: SetBy) -> None:
        self.engine.set_stage(self.synced, rid, stage, self.now, by)
        self.model[rid].manual(stage, by.value, self.now)

    @rule(rid=st.sampled_from(IDS))
    def set_stage_back_to_the_crm_status(self, rid: str) -> None:
        """A person undoes a change: sets the stage whose status the CRM holds."""
        model = self.model[rid]
        if model.remote not in STAGE_OF:
            return
        self.set_stage(rid, STAGE_OF[model.remote], SetBy.MANUAL)

    @rule(rid=st.sampled_from(IDS))
    def unlock(self, rid: str) -> None:
        self.engine.unlock(self.synced, rid, self.now)
        self.model[rid].unlock()

    @rule(step=st.sampled_from([timedelta(hours=1), DAY, 7 * DAY, 14 * DAY, 31 * DAY]))
    def time_passes(self, step: timedelta) -> None:
        self.now += step
        self.crm.now = self.now
        self.engine.run_timers(self.synced, self.now)
        for model in self.model.values():
            model.timers(self.now)

    @rule()
    def writeback(self) -> None:
        """The drain: conflict check, write, confirm (the CRM confirms every write)."""
        before = dict(self.crm.records)
        self.drain.run(self.synced, self.now)
        for rid, model in self.model.items():
            if model.pending is None:
                continue
            status, at = before[rid]
            if status == model.pending:
                # The CRM already holds what we meant to write (our write landed before a crash, or a
                # person set the same value): confirmed, not taken as a change. The contract's literal
                # reading ("differs from remote_status: handled as rule 1") would set `external`.
                model.remote, model.pending = status, None
            elif status != model.remote:
                model.pending = None  # a person changed it meanwhile: theirs wins, as rule 1
                model.status_read(status, at)
            else:
                model.remote, model.pending = model.pending, None

    @invariant()
    def store_matches_model(self) -> None:
        got = stored_view(self.store, self.synced, self.now)
        due = got.pop("(due)")["items"]
        assert sorted(got) == sorted(self.model)
        for rid, model in self.model.items():
            assert got[rid] == model_view(model), rid
        # The drain would claim exactly the model's pending write-backs.
        assert due == sorted((rid, m.pending) for rid, m in self.model.items() if m.pending)


def machine_for(store: Store, folder: Path) -> type[ConnectorMachine]:
    config, synced = make_synced(folder)
    attrs = {"store": store, "config": config, "synced": synced}
    return type(f"ConnectorMachineOn{store.dialect.title()}", (ConnectorMachine,), attrs)


MACHINE_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_engine_against_the_contract_model(store: Store, tmp_path: Path) -> None:
    run_state_machine_as_test(machine_for(store, tmp_path), settings=MACHINE_SETTINGS)


# --- single paths through the engine ---------------------------------------------------------------
@pytest.fixture
def rig(store: Store, tmp_path: Path) -> tuple[Engine, SyncedObject, FakeCrm, Drain]:
    config, synced = make_synced(tmp_path)
    crm = FakeCrm()
    drain = Drain(store, crm, config.model.writeback)  # type: ignore[arg-type]
    return Engine(config, store, sources={}), synced, crm, drain


def pull(engine: Engine, synced: SyncedObject, crm: FakeCrm, rid: str, status: str, at: datetime) -> None:
    crm.records[rid] = (status, at)
    engine.apply_page(synced, Page([RemoteRecord(rid, status, at)], Cursor(at, rid)), at)


def pending(store: Store) -> list[tuple[str, str]]:
    with store.transaction() as session:
        rows = session.execute(select(OutboxItem.external_id, OutboxItem.status).where(OutboxItem.state == "pending"))
        return sorted((r.external_id, r.status) for r in rows)


def test_commands_on_an_unknown_record_are_usage_errors(
    store: Store, rig: tuple[Engine, SyncedObject, FakeCrm, Drain]
) -> None:
    engine, synced, crm, _ = rig
    pull(engine, synced, crm, "r1", "Open", T0)
    with pytest.raises(UsageError, match="r2"):
        engine.feed_event(synced, "r2", "email_replied", T0, T0)
    with pytest.raises(UsageError, match="r2"):
        engine.set_stage(synced, "r2", "Won", T0)
    with pytest.raises(UsageError, match="r2"):
        engine.unlock(synced, "r2", T0)
    with pytest.raises(UsageError, match="Wonn"):
        engine.set_stage(synced, "r1", "Wonn", T0)
    assert sorted(stored_view(store, synced)) == ["r1"]
    assert pending(store) == []


def test_writeback_round_trip_is_not_mistaken_for_a_change(
    store: Store, rig: tuple[Engine, SyncedObject, FakeCrm, Drain]
) -> None:
    engine, synced, crm, drain = rig
    pull(engine, synced, crm, "r1", "Open", T0)
    engine.feed_event(synced, "r1", "email_replied", T0 + DAY, T0 + DAY)
    assert pending(store) == [("r1", "Contacted")]
    crm.now = T0 + DAY
    stats = drain.run(synced, T0 + DAY)
    assert (stats.done, stats.conflicts) == (1, 0)
    assert crm.records["r1"][0] == "Contacted" and pending(store) == []
    after = stored_view(store, synced)["r1"]
    assert (after["stage"], after["set_by"], after["remote"]) == ("Working", "trigger", "Contacted")
    # The next pull reads our own write back: nothing changes, nothing is recorded.
    engine.apply_page(synced, Page([RemoteRecord("r1", *crm.records["r1"])], Cursor(T0 + DAY, "r1")), T0 + DAY)
    assert stored_view(store, synced)["r1"] == after


def test_a_person_s_change_wins_over_a_pending_writeback(
    store: Store, rig: tuple[Engine, SyncedObject, FakeCrm, Drain]
) -> None:
    engine, synced, crm, drain = rig
    pull(engine, synced, crm, "r1", "Open", T0)
    engine.feed_event(synced, "r1", "email_replied", T0 + DAY, T0 + DAY)
    crm.records["r1"] = ("Closed Won", T0 + 2 * DAY)  # a person, before our write went out
    stats = drain.run(synced, T0 + 3 * DAY)
    assert stats.conflicts == 1 and crm.writes == []
    after = stored_view(store, synced)["r1"]
    assert (after["stage"], after["set_by"], after["remote"], after["pending"]) == ("Won", "external", "Closed Won", [])


@pytest.mark.parametrize("back", ["trigger", "manual"])
def test_moving_back_to_what_the_crm_holds_drops_the_pending_writeback(
    back: str, store: Store, rig: tuple[Engine, SyncedObject, FakeCrm, Drain]
) -> None:
    engine, synced, crm, drain = rig
    pull(engine, synced, crm, "r1", "Contacted", T0)
    engine.set_stage(synced, "r1", "New", T0 + DAY)  # queues Open
    assert pending(store) == [("r1", "Open")]
    if back == "trigger":
        engine.feed_event(synced, "r1", "email_replied", T0 + 2 * DAY, T0 + 2 * DAY)  # replied: New -> Working
    else:
        engine.set_stage(synced, "r1", "Working", T0 + 2 * DAY)
    assert stored_view(store, synced)["r1"]["stage"] == "Working"
    crm.now = T0 + 3 * DAY
    drain.run(synced, T0 + 3 * DAY)
    # The CRM must end up holding the record's stage, not the abandoned `Open`.
    assert crm.records["r1"][0] == "Contacted"


def test_timers_apply_every_deadline_passed_as_of_now(
    store: Store, rig: tuple[Engine, SyncedObject, FakeCrm, Drain]
) -> None:
    engine, synced, crm, _ = rig
    pull(engine, synced, crm, "r1", "Open", T0)
    # nudge: New -(30d)-> Working at T0+30d; gone-quiet: Working -(14d)-> Unresponsive at T0+44d.
    engine.run_timers(synced, T0 + 60 * DAY)
    view = stored_view(store, synced)["r1"]
    assert view["history"][1:] == [("New", "Working", False), ("Working", "Unresponsive", False)]
    assert view["stage"] == "Unresponsive"


def test_a_later_event_in_the_same_batch_cancels_an_earlier_writeback(
    store: Store, rig: tuple[Engine, SyncedObject, FakeCrm, Drain]
) -> None:
    engine, synced, crm, _ = rig
    pull(engine, synced, crm, "r1", "Contacted", T0)  # Working, the CRM holds Contacted
    batch = [
        RemoteEvent("r1", "email_bounced", T0 + MINUTE, "feed:1"),  # -> Unresponsive, queues No Response
        RemoteEvent("r1", "form_submitted", T0 + 2 * MINUTE, "feed:2"),  # came-back -> Working: nothing to send
    ]
    engine.apply_events(synced, batch, T0 + 3 * MINUTE)
    view = stored_view(store, synced)["r1"]
    assert view["stage"] == "Working"
    assert view["pending"] == []


class RacingCrm(FakeCrm):
    """A CRM write during which someone runs `connector stage set` on the same record."""

    during_write: Any = None

    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        if self.during_write is not None:
            hook, self.during_write = self.during_write, None
            hook()
        return super().write_statuses(obj, writes)


def test_a_manual_set_during_a_drain_is_not_lost_sqlite(tmp_path: Path) -> None:
    # SQLite only: on PostgreSQL the drain confirms under the outbox row locks, and a `stage set` run
    # from inside the CRM call (the same thread) would wait on them forever.
    store = open_store(f"sqlite:///{tmp_path}/race.db")
    try:
        config, synced = make_synced(tmp_path)
        crm = RacingCrm()
        engine = Engine(config, store, sources={})
        drain = Drain(store, crm, config.model.writeback)  # type: ignore[arg-type]
        pull(engine, synced, crm, "r1", "Open", T0)
        engine.feed_event(synced, "r1", "email_replied", T0 + DAY, T0 + DAY)  # Working, queues Contacted
        crm.during_write = lambda: engine.set_stage(synced, "r1", "Won", T0 + 2 * DAY)
        drain.run(synced, T0 + 2 * DAY)
        view = stored_view(store, synced)["r1"]
        assert (view["stage"], view["set_by"]) == ("Won", "manual")
    finally:
        store.close()
