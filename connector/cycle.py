"""The jobs of a sync cycle for one object, each recording its outcome where `status` shows it.

`sync --once` runs them in order; the daemon schedules each on its own interval. A source that is
paused (its daily allocation spent) is skipped until it may resume; a failure is recorded with the
CRM's own words and never stops the other objects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

from connector.config import SyncedObject
from connector.engine import Engine, EventStats, PageStats
from connector.sources.base import Cursor, Page
from connector.sources.errors import Action, CrmError, SourcePaused
from connector.store import repo
from connector.writeback import Drain, DrainStats

log = logging.getLogger("connector.cycle")
RECHECK = timedelta(minutes=2)  # how often a paused source asks the CRM whether it may resume
T = TypeVar("T")


@dataclass
class ObjectOutcome:
    source: str
    object: str
    pulled: PageStats = field(default_factory=PageStats)
    events: EventStats = field(default_factory=EventStats)
    timers: PageStats = field(default_factory=PageStats)
    drained: DrainStats = field(default_factory=DrainStats)
    paused: str | None = None
    error: str | None = None
    degraded: str | None = None  # activity could not be read (the records still were): the CRM's words

    @property
    def failed(self) -> bool:
        return self.error is not None or self.drained.dead > 0 or self.drained.paused is not None


class Jobs:
    """The per-object jobs over one engine; `stop` is checked between pages and batches."""

    def __init__(self, engine: Engine, stop: threading.Event | None = None) -> None:
        self.engine = engine
        self.stop = stop or threading.Event()

    def _guarded(
        self, synced: SyncedObject, now: datetime, outcome: ObjectOutcome, work: Callable[[], T], job: str = "pull"
    ) -> T | None:
        paused = self.paused_until(synced, now)
        if paused is not None and not self._usage_back(synced, now):
            outcome.paused = f"paused until {paused.isoformat()}, or until the CRM's usage is back under the budget"
            return None
        try:
            result = work()
        except SourcePaused as exc:
            until = now + timedelta(seconds=exc.resume_after)
            outcome.paused = f"{exc.describe()}; resumes by itself after {until.isoformat()}"
            log.warning("%s %s paused: %s", synced.source, synced.name, exc.describe())
            self._record(synced, now, "paused", exc.describe(), paused_until=until)
            return None
        except CrmError as exc:
            outcome.error = exc.describe()
            hint = (
                " (the admin must act: check permissions, credentials and field names)"
                if exc.action is Action.ADMIN
                else ""
            )
            log.error("%s %s failed: %s%s", synced.source, synced.name, exc.describe(), hint)
            self._record(synced, now, "failed", exc.describe() + hint, job=job)
            return None
        self._record(synced, now, "ok", None, job=job)
        return result

    def _usage_back(self, synced: SyncedObject, now: datetime) -> bool:
        """A paused source asks the CRM (one cheap call, at most every RECHECK) whether its usage is
        back under the budget, rather than waiting out the pause: a new day may have reset it."""
        with self.engine.store.transaction() as session:
            last = repo.health(session, synced.source, synced.name).last_run_at
        source = self.engine.sources.get(synced.source)
        if source is None or (last is not None and now - last < RECHECK):
            return False
        try:
            usage = source.check_usage(synced.name)
        except CrmError as exc:
            self._record(synced, now, "paused", exc.describe(), paused_until=self.paused_until(synced, now))
            return False
        budget = self.engine.config.model.sources[synced.source].api_budget
        if usage.used is None or not usage.limit or usage.used < budget * usage.limit:
            log.info("%s %s: API usage is back under the budget; resuming", synced.source, synced.name)
            return True
        return False

    def paused_until(self, synced: SyncedObject, now: datetime) -> datetime | None:
        with self.engine.store.transaction() as session:
            health = repo.health(session, synced.source, synced.name)
            until = health.paused_until
        return until if until is not None and until > now else None

    def _record(
        self,
        synced: SyncedObject,
        now: datetime,
        outcome: str,
        error: str | None,
        paused_until: datetime | None = None,
        job: str = "pull",
    ) -> None:
        source = self.engine.sources.get(synced.source)
        usage = source.usage() if source is not None else None

        def work(session: Session) -> None:
            health = repo.health(session, synced.source, synced.name)
            health.last_run_at = now
            if usage is not None and usage.used is not None:
                health.api_used, health.api_limit = usage.used, usage.limit
            if outcome == "ok" and health.last_outcome == "failed" and health.failed_job not in (None, job):
                return  # the write-back going well says nothing of a pull that fails, nor the reverse
            health.failed_job = job if outcome == "failed" else None
            health.last_outcome = outcome
            if error is not None:
                health.last_error, health.last_error_at = error, now
                health.consecutive_failures = (health.consecutive_failures or 0) + (outcome == "failed")
            else:
                health.consecutive_failures = 0
            health.paused_until = paused_until
            health.paused_reason = error if paused_until else None

        self.engine.store.run(work)

    # --- the jobs --------------------------------------------------------------------------------
    def pull(
        self,
        synced: SyncedObject,
        now: datetime,
        outcome: ObjectOutcome,
        progress: Callable[[PageStats], None] | None = None,
    ) -> None:
        def work() -> None:
            outcome.pulled = self.engine.pull(synced, now, progress=progress, stop=self.stop)

        self._guarded(synced, now, outcome, work)
        if outcome.error is None and outcome.paused is None and not self.stop.is_set():
            self._guarded(synced, now, outcome, lambda: self.activity(synced, now, outcome))

    def pull_ids(self, synced: SyncedObject, ids: Sequence[str], now: datetime, outcome: ObjectOutcome) -> list[str]:
        """A targeted pull (webhooks): read these records and apply them like any page, without
        moving the cursor (the scheduled pull still reads them and finds nothing new). Returns the
        ids the CRM no longer has (deleted or merged away), for the scheduled pull to settle."""
        source = self.engine.sources[synced.source]
        missing: list[str] = []

        def work() -> None:
            found = source.read_statuses(synced.name, list(ids))
            missing.extend(i for i in ids if i not in found)
            if found:
                outcome.pulled = self.engine.apply_page(synced, Page(list(found.values()), Cursor()), now,
                                                        save_cursor=False)

        self._guarded(synced, now, outcome, work)
        return missing

    def activity(self, synced: SyncedObject, now: datetime, outcome: ObjectOutcome) -> None:
        """Activity is optional: a failure to read it degrades the object, never stops its records,
        timers or write-back; it is tried again on its own back-off (30 s doubling to 30 min)."""
        if synced.settings.activity is not None and not synced.settings.activity.enabled:
            return
        with self.engine.store.transaction() as session:
            health = repo.health(session, synced.source, synced.name)
            retry_at, error = health.activity_retry_at, health.activity_error
        if error is not None and retry_at is not None and retry_at > now:
            outcome.degraded = f"{error} (activity is read again after {retry_at.isoformat()})"
            return
        try:
            outcome.events = self.engine.pull_events(synced, now)
        except SourcePaused:
            raise  # the source's budget, not the activity's: `_guarded` pauses the source
        except CrmError as exc:
            self._activity_failed(synced, now, outcome, exc)
            return
        if error is not None:
            log.info("%s %s: activity can be read again", synced.source, synced.name)
            self._activity_state(synced, None, now)

    def _activity_failed(self, synced: SyncedObject, now: datetime, outcome: ObjectOutcome, exc: CrmError) -> None:
        retry_at = self._activity_state(synced, exc.describe(), now)
        outcome.degraded = f"{exc.describe()} (activity is read again after {retry_at.isoformat()})"
        log.warning(
            "%s %s degraded: activity cannot be read: %s; records, timers and write-back go on",
            synced.source,
            synced.name,
            exc.describe(),
        )

    def _activity_state(self, synced: SyncedObject, error: str | None, now: datetime) -> datetime:
        def work(session: Session) -> datetime:
            health = repo.health(session, synced.source, synced.name)
            if error is None:
                health.activity_error = health.activity_error_at = health.activity_retry_at = None
                health.activity_failures = 0
                return now
            failures = (health.activity_failures or 0) + 1
            health.activity_failures = failures
            health.activity_error, health.activity_error_at = error, now
            health.activity_retry_at = now + timedelta(seconds=min(1800.0, 30.0 * 2 ** (failures - 1)))
            return health.activity_retry_at

        return self.engine.store.run(work)

    def timers(self, synced: SyncedObject, now: datetime, outcome: ObjectOutcome) -> None:
        outcome.timers = self.engine.run_timers(synced, now)

    def drain(self, synced: SyncedObject, now: datetime, outcome: ObjectOutcome) -> None:
        settings = self.engine.config.model.writeback
        if not settings.enabled:
            return
        source = self.engine.sources[synced.source]
        with self.engine.store.transaction() as session:
            waiting = repo.health(session, synced.source, synced.name).writeback_error

        def work() -> DrainStats:
            return Drain(self.engine.store, source, settings).run(synced, now, stop=self.stop, paused=bool(waiting))

        result = self._guarded(synced, now, outcome, work, job="writeback")
        if result is None:
            return
        outcome.drained = result
        if result.paused != waiting and (result.paused is not None or result.claimed > 0):
            self._writeback_state(synced, result.paused, now)
            if result.paused is not None:
                log.error(
                    "%s %s: write-back paused until the admin acts: %s; the items stay pending",
                    synced.source,
                    synced.name,
                    result.paused,
                )
            else:
                log.info("%s %s: write-back resumed", synced.source, synced.name)

    def _writeback_state(self, synced: SyncedObject, error: str | None, now: datetime) -> None:
        def work(session: Session) -> None:
            health = repo.health(session, synced.source, synced.name)
            health.writeback_error = error
            health.writeback_error_at = now if error else None

        self.engine.store.run(work)

    def once(
        self, synced: SyncedObject, now: datetime, progress: Callable[[PageStats], None] | None = None
    ) -> ObjectOutcome:
        """One full cycle: pull (records and activity), timers as of `now`, write-back."""
        outcome = ObjectOutcome(synced.source, synced.name)
        self.pull(synced, now, outcome, progress)
        if self.stop.is_set():
            return outcome
        self.timers(synced, now, outcome)
        if outcome.error is None and outcome.paused is None and not self.stop.is_set():
            self.drain(synced, now, outcome)
        return outcome
