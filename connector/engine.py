"""One sync cycle for one object: pull pages -> decide -> one transaction per page.

The engine reads the store, asks `rules` for decisions and hands the results back to the store; it
never talks HTTP itself (sources do) and holds no rule logic (rules do).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from connector import rules
from connector.config import Config, SyncedObject
from connector.errors import UsageError
from connector.record_writes import (
    assign_owner,
    decide_remote,
    fold,
    our_write,
    plain_write,
    read_back,
    resend_stage,
    sent_landed,
    traces_ended,
    write_for,
)
from connector.rules import Decision, SetBy, Transition
from connector.sources.base import Cursor, Page, RemoteEvent, RemoteRecord, Source
from connector.sources.prefetch import read_ahead
from connector.store import repo
from connector.store.db import Store
from connector.yamlfile import suggest

TIMER_BATCH = 1000
log = logging.getLogger("connector.engine")
BASELINE = "baseline"  # the cursor row that holds an object's baseline instant (rule 4)


@dataclass
class PageStats:
    records: int = 0
    changed: int = 0
    transitions: int = 0  # moves from one stage to another (or out of the funnel)
    new: int = 0  # records new to the store taking the stage of their CRM status: not moves
    suppressed: int = 0
    writebacks: int = 0
    quarantined: int = 0
    deleted: int = 0
    suppressed_by: dict[str, int] = field(default_factory=dict)  # reason -> count, for metrics
    # cause -> moves: a pull's moves are the CRM's (external), a criteria trigger's, a conflict's, ...
    by_cause: dict[str, int] = field(default_factory=dict)

    def add(self, other: PageStats) -> None:
        for name in ("records", "changed", "transitions", "new", "suppressed", "writebacks", "quarantined", "deleted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.suppressed_by, other.suppressed_by), (self.by_cause, other.by_cause)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count


@dataclass
class EventStats:
    events: int = 0
    new: int = 0
    orphans: int = 0  # activity on records not (yet) in the store
    moves: PageStats = field(default_factory=PageStats)


def _count(stats: PageStats, write: repo.RecordWrite) -> None:
    if write.stamp_only:
        return
    stats.changed += 1
    for transition in write.transitions:
        if transition.suppressed:
            stats.suppressed += 1
            # The reason's stable head ("would move backwards", "quarantined", ...) labels the metric.
            reason = (transition.reason or "unknown").split(":")[0].split("'")[0].strip()
            stats.suppressed_by[reason] = stats.suppressed_by.get(reason, 0) + 1
        elif transition.from_stage is None and write.record_id is None:
            stats.new += 1
        else:
            stats.transitions += 1
            stats.by_cause[transition.cause.value] = stats.by_cause.get(transition.cause.value, 0) + 1
    stats.writebacks += 1 if write.writeback else 0
    stats.quarantined += 1 if write.state.quarantined else 0


def _position(cursor: Cursor) -> tuple[datetime, tuple[int, int, str]]:
    ident = cursor.last_id or ""
    # HubSpot ids are numbers written as text: "999" comes before "1000".
    order = (0, int(ident), "") if ident.isdigit() else (1, 0, ident)
    return (cursor.modified_at or datetime.min.replace(tzinfo=UTC), order)


def _ahead(new: Cursor, stored: Cursor) -> bool:
    """A re-read page (the lookback) must not move the stored cursor back."""
    return stored.modified_at is None or _position(new) >= _position(stored)


def _baseline(session: Session, synced: SyncedObject, now: datetime, *, save: bool = True) -> datetime:
    """B, fixed (with `save`) at `now` in the transaction of the object's first page when there is none yet."""
    at, _ = repo.get_cursor(session, synced.source, synced.name, BASELINE)
    if at is None:
        # Whole seconds: Salesforce stamps to the second, so activity logged in the same second as the
        # first sync must not fall before B by a fraction.
        at = now.replace(microsecond=0)
        if save:
            repo.save_cursor(session, synced.source, synced.name, at, None, now, BASELINE)
    return at


def _existed(remote: RemoteRecord, baseline: datetime) -> bool:
    return (remote.created_at or remote.modified_at) <= baseline


class Engine:
    def __init__(self, config: Config, store: Store, sources: dict[str, Source]) -> None:
        self.config = config
        self.store = store
        self.sources = sources
        # The wall clock, for how far pulls read; rules never see it (they take `now`).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    # --- lookups that the CLI reports as usage errors -------------------------------------------
    def _check_source(self, source: str) -> None:
        names = sorted({s for s, _ in self.config.objects})
        if source not in names:
            raise UsageError(f"unknown source '{source}'{suggest(source, names)}; sources: {', '.join(names)}")

    def synced(self, source: str, obj: str) -> SyncedObject:
        self._check_source(source)
        if (source, obj) not in self.config.objects:
            objects = sorted(o for s, o in self.config.objects if s == source)
            raise UsageError(
                f"unknown object '{obj}' in source '{source}'{suggest(obj, objects)}; objects: {', '.join(objects)}"
            )
        return self.config.object(source, obj)

    def objects(self, source: str | None = None, obj: str | None = None) -> list[SyncedObject]:
        """The objects a command names: all, all of one source, or one."""
        if source is None:
            return list(self.config.objects.values())
        if obj is not None:
            return [self.synced(source, obj)]
        self._check_source(source)
        return [o for (s, _), o in self.config.objects.items() if s == source]

    # --- records ---------------------------------------------------------------------------------
    def baseline(self, synced: SyncedObject, now: datetime) -> datetime:
        """The object's baseline instant B (rule 4), fixed by its first sync."""

        def work(session: Session) -> datetime:
            return _baseline(session, synced, now)

        return self.store.run(work)

    def _enrolled_clocks(self, synced: SyncedObject, page: Page, now: datetime) -> dict[str, datetime]:
        """`enroll_existing`: when the status of each record that existed at B last changed, from the CRM."""
        if not synced.mapping.enroll_existing:
            return {}
        with self.store.transaction() as session:
            baseline = _baseline(session, synced, now, save=False)
            ids = [r.id for r in page.records]
            known = repo.load_briefs(session, synced.source, synced.name, ids, with_fields=False)
        existing = [r.id for r in page.records if r.id not in known and not r.deleted and _existed(r, baseline)]
        return self.sources[synced.source].status_changed_at(synced.name, existing) if existing else {}

    def apply_page(self, synced: SyncedObject, page: Page, now: datetime, *, save_cursor: bool = True) -> PageStats:
        """Decide and persist one page and its cursor in one transaction (again from the start on a lost connection)."""
        clocks = self._enrolled_clocks(synced, page, now)

        def work(session: Session) -> PageStats:
            stats = PageStats(records=len(page.records))
            baseline = _baseline(session, synced, now)
            rows = repo.load_rows(session, synced.source, synced.name, [r.id for r in page.records])
            # Most reads are the store's own state coming back: judged on the rows as they are (nothing
            # to write, or only the newer stamp); the others are decided below, record by record.
            candidates: list[RemoteRecord] = []
            stamps: list[tuple[int, datetime]] = []
            for remote in page.records:
                row = rows.get(remote.id)
                verdict = read_back(row, remote, synced.mapping)
                if verdict is None:
                    candidates.append(remote)
                elif verdict == "stamp" and row is not None:
                    stamps.append((row[repo.R_ID], remote.modified_at))
            stored = {r.id: repo.stored_from_row(rows[r.id]) for r in candidates if r.id in rows}
            pending = repo.pending_writebacks(session, [s.id for s in stored.values()])
            sent = repo.sent_statuses(session, [s.id for s in stored.values()])
            dead = repo.dead_statuses(session, list(sent)) if sent else {}
            writes: list[repo.RecordWrite] = []
            for remote in candidates:
                record = stored.get(remote.id)
                item = pending.get(record.id) if record is not None else None
                stale = record is not None and rules.is_stale(record.remote_modified_at, remote.modified_at)
                landed: str | None = None
                if record is not None and not stale:
                    if item is not None and our_write(record, remote, item[2]):
                        # Our write-back reached the CRM but its confirmation was lost (a crash between the
                        # two): reading it back is the confirmation, not a person's change (rule 1). A stale
                        # read that shows the same status is older than our write: it confirms nothing (rule 5).
                        landed = item[2]
                        repo.finish_item(session, item[0], item[1], "done", now, "confirmed by reading it back")
                    elif sent_landed(record, remote, sent.get(record.id)):
                        # The same, for a write whose item a newer stage replaced after the crash: the trace
                        # committed before the send tells it was ours.
                        landed = remote.status
                if record is not None and landed is not None:
                    record = replace(record, state=rules.written(record.state, landed))
                    confirmed = decide_remote(record, remote, synced.mapping) or plain_write(
                        record, remote.id, Decision(record.state), synced.mapping
                    )
                    known = record.remote_modified_at or remote.modified_at
                    confirmed.remote_modified_at = max(remote.modified_at, known)
                    resend_stage(confirmed, synced.mapping, pending=item is not None, dead=dead.get(record.id))
                    writes.append(confirmed)
                    continue
                first_seen = rules.first_seen_at(
                    baseline,
                    remote.created_at,
                    remote.modified_at,
                    enroll_existing=synced.mapping.enroll_existing,
                    status_changed_at=clocks.get(remote.id),
                )
                write = decide_remote(
                    record, remote, synced.mapping, first_seen,
                    fires_at_first_read=synced.mapping.enroll_existing or not _existed(remote, baseline),
                )
                if write is not None:
                    if write.merged_into and item is not None:
                        # Not re-targeted: the winner's status is a person's to judge after a merge.
                        dropped = f"the pending write-back of '{item[2]}' was dropped"
                        write.transitions = [replace(t, reason=f"{t.reason}; {dropped}") for t in write.transitions]
                        log.warning(
                            "%s %s %s: merged into %s in the CRM; %s (set the winner's stage by hand if needed)",
                            synced.source, synced.name, remote.id, write.merged_into, dropped,
                        )
                    writes.append(write)
                    _count(stats, write)
                    stats.deleted += 1 if write.deleted else 0
            repo.save_records(session, synced.source, synced.name, writes, now, stamps)
            # Our writes found landed are among them: read back, they too showed another status, not stale.
            repo.forget_sent(session, traces_ended(stored, candidates, sent))
            if save_cursor and _ahead(page.cursor, Cursor(*repo.get_cursor(session, synced.source, synced.name))):
                repo.save_cursor(session, synced.source, synced.name, page.cursor.modified_at, page.cursor.last_id, now)
            return stats

        return self.store.run(work)

    def cursor(self, synced: SyncedObject, kind: str = "records") -> Cursor:
        with self.store.transaction() as session:
            return Cursor(*repo.get_cursor(session, synced.source, synced.name, kind))

    def pull(
        self,
        synced: SyncedObject,
        now: datetime,
        progress: Callable[[PageStats], None] | None = None,
        stop: threading.Event | None = None,
    ) -> PageStats:
        """Pull what changed since the cursor, page by page, each page committed with its cursor.

        `stop` is checked between pages: the page in hand is always committed whole.
        """
        source = self.sources[synced.source]
        total = PageStats()
        # The next page is fetched while this one is decided and committed (see `read_ahead`).
        with read_ahead(source.pull(synced.name, self.cursor(synced), until=self.until(now))) as pages:
            for page in pages:
                total.add(self.apply_page(synced, page, now))
                if progress:
                    progress(total)
                if stop is not None and stop.is_set():
                    break
        self._note_pulled(synced, total.records, now)
        return total

    def until(self, now: datetime) -> datetime:
        """How far a pull reads: `--now` bounds the rules, never the pull (a cursor held back at an
        earlier `--now` would make every later pull re-read everything written since)."""
        return max(now, self.clock())

    def _note_pulled(self, synced: SyncedObject, count: int, now: datetime) -> None:
        def work(session: Session) -> None:
            health = repo.health(session, synced.source, synced.name)
            health.records_pulled = (health.records_pulled or 0) + count

        self.store.run(work)

    # --- events ----------------------------------------------------------------------------------
    def apply_events(
        self, synced: SyncedObject, events: Sequence[RemoteEvent], now: datetime, cursor: Cursor | None = None
    ) -> EventStats:
        """Take in activity events once each (deduplicated by key) and apply the triggers, in time order."""

        def work(session: Session) -> EventStats:
            stats = EventStats(events=len(events))
            stored = repo.load_records(session, synced.source, synced.name, sorted({e.record_id for e in events}))
            # Activity on a record no pull has shown yet (its search index or commit is behind) is not
            # taken in: the settle window reads it again and it counts once the record is known.
            known = [e for e in events if e.record_id in stored and not stored[e.record_id].deleted]
            stats.orphans = len({e.key for e in events} - {e.key for e in known})
            rows = [
                {"object": synced.name, "external_id": e.record_id, "type": e.type, "at": e.at, "dedupe_key": e.key}
                for e in known
            ]
            baseline = _baseline(session, synced, now)
            new_keys = repo.insert_new_events(session, synced.source, rows, now)
            once = {e.key: e for e in reversed(known)}  # the same key twice in one batch counts once
            fresh = sorted((e for k, e in once.items() if k in new_keys), key=lambda e: (e.at, e.key))
            stats.new = len(fresh)
            states: dict[str, repo.RecordWrite] = {}
            for event in fresh:
                record = stored[event.record_id]
                write = states.get(event.record_id) or write_for(
                    record, record.external_id, Decision(record.state), synced.mapping
                )
                decision = rules.on_activity(write.state, event.type, synced.mapping, event.at, baseline)
                fold(write, decision, synced.mapping)  # several events for one record in a page
                states[event.record_id] = write
            writes = list(states.values())
            for write in writes:
                # Events are folded in one by one (`_merge`); the owner follows the stage they ended in.
                assign_owner(write, synced.mapping)
                _count(stats.moves, write)
            repo.save_records(session, synced.source, synced.name, writes, now)
            stored_cursor = Cursor(*repo.get_cursor(session, synced.source, synced.name, "events"))
            if cursor is not None and _ahead(cursor, stored_cursor):
                repo.save_cursor(session, synced.source, synced.name, cursor.modified_at, cursor.last_id, now, "events")
            return stats

        return self.store.run(work)

    def pull_events(self, synced: SyncedObject, now: datetime) -> EventStats:
        source = self.sources[synced.source]
        total = EventStats()
        cursor = self.cursor(synced, "events")
        if cursor.modified_at is None:
            # The first activity pull starts at the baseline: history before it fires nothing (rule 4).
            cursor = Cursor(self.baseline(synced, now), None)
        for page in source.pull_events(synced.name, cursor, until=self.until(now)):
            stats = self.apply_events(synced, page.events, now, page.cursor)
            total.events += stats.events
            total.new += stats.new
            total.orphans += stats.orphans
            total.moves.add(stats.moves)
        return total

    # --- timers ----------------------------------------------------------------------------------
    def run_timers(self, synced: SyncedObject, now: datetime) -> PageStats:
        """Apply `inactive` triggers that have come due as of `now`."""
        total = PageStats()
        while True:

            def work(session: Session) -> PageStats:
                stats = PageStats()
                due = repo.due_for_timers(session, synced.source, synced.name, now, TIMER_BATCH)
                stats.records = len(due)
                writes = []
                for record in due:
                    decision = rules.on_time(record.state, synced.mapping, now)
                    write = write_for(record, record.external_id, decision, synced.mapping)
                    writes.append(write)
                    if decision.changed:
                        _count(stats, write)
                repo.save_records(session, synced.source, synced.name, writes, now)
                return stats

            stats = self.store.run(work)
            total.add(stats)
            # A move starts the next stage's clock, which may also have run out by `now`: go round
            # again until nothing is due. Each round either moves a record (its clock starts later)
            # or decides it, so this ends.
            if stats.records == 0 or stats.changed == 0:
                return total

    # --- by hand ---------------------------------------------------------------------------------
    def _one(self, session: Session, synced: SyncedObject, external_id: str) -> repo.StoredRecord:
        record = repo.get_record(session, synced.source, synced.name, external_id)
        if record is None:
            close = repo.closest_external_ids(session, synced.source, synced.name, external_id)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"no record '{external_id}' in {synced.source} {synced.name}{hint}")
        return record

    def stage_name(self, synced: SyncedObject, stage: str) -> str:
        mapping = synced.mapping
        if mapping.has_stage(stage):
            return stage
        names = mapping.stage_names
        hint = suggest(stage, names)
        raise UsageError(f"unknown stage '{stage}' for {synced.source} {synced.name}{hint}; stages: {', '.join(names)}")

    def set_stage(
        self,
        synced: SyncedObject,
        external_id: str,
        stage: str,
        now: datetime,
        by: SetBy = SetBy.MANUAL,
        note: str = "",
    ) -> Decision:
        stage = self.stage_name(synced, stage)

        def work(session: Session) -> Decision:
            record = self._one(session, synced, external_id)
            decision = rules.manual_set(record.state, stage, synced.mapping, now, by, note)
            if record.converted:
                decision = replace(decision, writeback=None)
            write = write_for(record, external_id, decision, synced.mapping)
            repo.save_records(session, synced.source, synced.name, [write], now)
            return decision

        return self.store.run(work)

    def set_stages(
        self,
        synced: SyncedObject,
        rows: Sequence[tuple[str, str]],
        now: datetime,
        by: SetBy = SetBy.IMPORT,
        note: str = "",
    ) -> dict[str, Decision]:
        """Set many stages by hand (a CSV import): one transaction per thousand rows.

        Ids must exist and stages must be the mapping's names; callers check (and reject) first.
        """
        decisions: dict[str, Decision] = {}
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]

            def work(session: Session, chunk: Sequence[tuple[str, str]] = chunk) -> dict[str, Decision]:
                stored = repo.load_records(session, synced.source, synced.name, [i for i, _ in chunk])
                writes, done = [], {}
                for external_id, stage in chunk:
                    record = stored[external_id]
                    decision = rules.manual_set(record.state, stage, synced.mapping, now, by, note)
                    if record.converted:
                        decision = replace(decision, writeback=None)
                    writes.append(write_for(record, external_id, decision, synced.mapping))
                    done[external_id] = decision
                repo.save_records(session, synced.source, synced.name, writes, now)
                return done

            decisions.update(self.store.run(work))
        return decisions

    def unlock(self, synced: SyncedObject, external_id: str, now: datetime) -> Decision:
        def work(session: Session) -> Decision:
            record = self._one(session, synced, external_id)
            decision = rules.unlock(record.state, now)
            repo.save_records(
                session, synced.source, synced.name, [write_for(record, external_id, decision, synced.mapping)], now
            )
            return decision

        return self.store.run(work)

    def feed_event(
        self, synced: SyncedObject, external_id: str, event_type: str, at: datetime, now: datetime
    ) -> EventStats:
        with self.store.transaction() as session:
            self._one(session, synced, external_id)
        key = f"cli:{external_id}:{event_type}:{at.isoformat()}"
        return self.apply_events(synced, [RemoteEvent(external_id, event_type, at, key)], now)

    def remap(
        self, synced: SyncedObject, now: datetime, ids: Iterable[str] | None = None
    ) -> tuple[PageStats, list[tuple[str, Transition]]]:
        """After a mapping change: every record's stage follows its CRM status under the new table.

        Returns the stats and each record's transition.
        """
        if ids is None:
            with self.store.transaction() as session:
                ids = repo.external_ids(session, synced.source, synced.name)
        all_ids = sorted(ids)
        total = PageStats()
        moves: list[tuple[str, Transition]] = []
        for start in range(0, len(all_ids), 1000):
            chunk = all_ids[start : start + 1000]

            def work(session: Session, chunk: list[str] = chunk) -> PageStats:
                stats = PageStats(records=len(chunk))
                writes = []
                for record in repo.load_records(session, synced.source, synced.name, chunk).values():
                    decision = rules.remap(record.state, synced.mapping, now)
                    if decision.changed or decision.state != record.state:
                        write = write_for(record, record.external_id, decision, synced.mapping)
                        writes.append(write)
                        moves.extend((record.external_id, t) for t in write.transitions)
                        _count(stats, write)
                repo.save_records(session, synced.source, synced.name, writes, now)
                return stats

            total.add(self.store.run(work))
        return total, moves
