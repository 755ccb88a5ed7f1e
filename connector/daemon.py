"""`connector run`: the scheduled daemon.

APScheduler decides *when*; each job claims its work itself (an advisory lock per object on
PostgreSQL, SKIP LOCKED outbox claims), so several daemons can share one database. One object's
failure never stops another's. SIGTERM / SIGINT set a stop flag that jobs check between pages and
batches: the page in hand is committed whole, then the process exits 0.

The stop is bounded whatever the CRMs do: the same flag cuts short every retry backoff and
rate-limit wait (`sources.retry.pause`), and a job still inside a CRM call `STOP_GRACE` seconds
after the signal is abandoned: the process exits anyway. Nothing it held is lost: its uncommitted
page is pulled again, its outbox claims were row locks (PostgreSQL) or plain reads (SQLite) and are
pending again, and notifications not yet sent were handed back before the wait.

A lost database connection (a restarted PostgreSQL, `pg_terminate_backend`) is not a bug: the job
is run again once on a fresh connection, with one warning line.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import DBAPIError, OperationalError

from connector.config import Server, SyncedObject
from connector.cycle import Jobs, ObjectOutcome
from connector.engine import Engine
from connector.locks import DaemonLock, object_lock
from connector.metrics import Metrics
from connector.sources import retry
from connector.store import repo
from connector.web.server import serve, serve_webhooks
from connector.webhooks.intake import Batch, Intake
from connector.webhooks.receivers import build_receivers

log = logging.getLogger("connector.daemon")

STOP_GRACE = 8.0  # seconds a job may take to reach a safe point after SIGTERM


def failure_backoff(failures: int) -> timedelta:
    """How long a failing source waits before the next try: growing, capped at 30 minutes."""
    return timedelta(seconds=min(1800, 30 * 2 ** max(0, failures - 1))) if failures else timedelta(0)


class Daemon:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stop: threading.Event | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.stop = stop or threading.Event()
        retry.stop_on(self.stop)  # every CRM wait in this process ends when the daemon is told to stop
        self.jobs = Jobs(engine, self.stop)
        self.metrics = Metrics()
        self.lock = DaemonLock(engine.store.engine)
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        self._servers: list[Any] = []
        self._drain_locks: dict[str, threading.Lock] = {}
        self.intake: Intake | None = None
        self._notifying = threading.Lock()

    # --- jobs ------------------------------------------------------------------------------------
    def _run(self, job: str, synced: SyncedObject, work: Callable[[ObjectOutcome], None], *, locked: bool) -> bool:
        """Run one job for one object; False when it did not run (backing off, or the object was busy)."""
        if self.stop.is_set():
            return False
        outcome = ObjectOutcome(synced.source, synced.name)
        started = time.monotonic()
        try:
            if not self._attempt(job, synced, work, outcome, locked=locked):
                return False
        except retry.Stopped:
            log.info("%s %s: the %s job stopped while waiting on the CRM", synced.source, synced.name, job)
            return True
        except Exception as exc:  # a bug must be reported, never silently end the job for good
            if isinstance(exc, DBAPIError) and connection_lost(exc):
                # Lost twice in a row: the database is down, not a bug; the schedule tries again.
                log.error(
                    "%s %s: the %s job could not reach the database (%s); it runs again on its next schedule",
                    synced.source, synced.name, job, first_line(exc),
                )
            else:
                log.exception("%s %s: the %s job failed", synced.source, synced.name, job)
            self.metrics.failures.labels(synced.source, synced.name, job).inc()
            return True
        finally:
            self.metrics.cycle_seconds.labels(synced.source, synced.name, job).observe(time.monotonic() - started)
        if outcome.error:
            self.metrics.failures.labels(synced.source, synced.name, job).inc()
        self.metrics.observe(outcome)
        self._report(job, outcome)
        return True

    def _attempt(
        self, job: str, synced: SyncedObject, work: Callable[[ObjectOutcome], None], outcome: ObjectOutcome,
        *, locked: bool,
    ) -> bool:
        """Run `work` (under the object's lock); False when it did not run (backing off, or another daemon's).

        A connection the database dropped (restart, failover, `pg_terminate_backend`) ends the job
        with an OperationalError from wherever it was; everything committed stays committed and the
        rest was rolled back, so the whole job runs once more on a fresh connection.
        """
        for attempt in (1, 2):
            try:
                if self._backing_off(synced, self.clock()):
                    return False
                if not locked:
                    work(outcome)
                    return True
                with object_lock(self.engine.store.engine, synced.source, synced.name) as held:
                    if not held:
                        return False  # another daemon is on this object right now
                    work(outcome)
                return True
            except DBAPIError as exc:
                if attempt == 2 or not connection_lost(exc) or self.stop.is_set():
                    raise
                log.warning(
                    "%s %s: the database connection was lost during the %s job (%s); reconnecting and running it again",
                    synced.source, synced.name, job, first_line(exc),
                )
                self.engine.store.engine.dispose()  # the pool's other connections died with it
        return True

    def _backing_off(self, synced: SyncedObject, now: datetime) -> bool:
        with self.engine.store.transaction() as session:
            health = repo.health(session, synced.source, synced.name)
            failures, last = health.consecutive_failures or 0, health.last_run_at
        return bool(failures and last and now < last + failure_backoff(failures))

    def _report(self, job: str, outcome: ObjectOutcome) -> None:
        p, d = outcome.pulled, outcome.drained
        if outcome.paused:
            log.warning("%s %s: paused: %s", outcome.source, outcome.object, outcome.paused)
        elif p.records or d.claimed or outcome.timers.changed or outcome.events.new:
            log.info(
                "%s %s %s: pulled %d (%d moved), activity %d, timers %d, written %d, conflicts %d, dead %d",
                outcome.source,
                outcome.object,
                job,
                p.records,
                p.transitions,
                outcome.events.new,
                outcome.timers.transitions,
                d.done,
                d.conflicts,
                d.dead,
            )

    def pull(self, synced: SyncedObject) -> None:
        self._run("pull", synced, lambda o: self.jobs.pull(synced, self.clock(), o), locked=True)

    def timers(self, synced: SyncedObject) -> None:
        def work(outcome: ObjectOutcome) -> None:
            self.jobs.timers(synced, self.clock(), outcome)
            self._notify()

        self._run("timers", synced, work, locked=True)

    def drain(self, synced: SyncedObject) -> None:
        # The scheduled write-back and a webhook's take turns: on SQLite a claim is a plain read, and
        # two drains of one object would send an item twice and take the second for a conflict.
        with self._drain_locks.setdefault(f"{synced.source}:{synced.name}", threading.Lock()):
            self._run("writeback", synced, lambda o: self.jobs.drain(synced, self.clock(), o), locked=False)

    def reconcile(self, synced: SyncedObject) -> None:
        from connector.resync import ResyncOptions, resync

        def work(outcome: ObjectOutcome) -> None:
            report = resync(self.engine, synced, ResyncOptions(full=True), self.clock())
            outcome.pulled = report.repaired
            if report.repaired.changed:
                log.warning(
                    "%s %s: reconcile repaired %d records the incremental pulls had missed",
                    synced.source,
                    synced.name,
                    report.repaired.changed,
                )

        self._run("reconcile", synced, work, locked=True)

    def targeted_pull(self, batch: Batch) -> bool:
        """The records webhooks named: read now, and their write-backs sent now, not at the next poll.

        False when the object is busy (its scheduled pull holds the lock): the intake tries again.
        """
        synced = self.engine.synced(batch.source, batch.object)
        if self._backing_off(synced, self.clock()) or self.engine.cursor(synced).modified_at is None:
            return True  # failing, or not synced yet: the scheduled pull (its first sync) reads them
        missing: list[str] = []

        def work(outcome: ObjectOutcome) -> None:
            if batch.changed:
                missing.extend(self.jobs.pull_ids(synced, list(batch.changed), self.clock(), outcome))

        if not self._run("webhook", synced, work, locked=True):
            return False
        if missing or batch.gone:
            # Deletions and merges are the incremental pull's to read (it sees deleted records).
            job = self.scheduler.get_job(f"pull:{synced.source}:{synced.name}")
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))
        self.drain(synced)
        if batch.received_at is not None:
            lag = (self.clock() - batch.received_at).total_seconds()
            self.metrics.webhook_lag.labels(synced.source, synced.name).observe(max(0.0, lag))
        return True

    def _notify(self) -> None:
        try:
            from connector.notify import notify_job
        except ImportError:  # notifications are optional
            return
        # Every object's timers job ends in a notify pass over all objects; one at a time per process
        # is enough (a pass already running sends what the others would).
        if not self._notifying.acquire(blocking=False):
            return
        try:
            notify_job(self.engine, self.clock(), stop=self.stop)
        finally:
            self._notifying.release()

    def _intake(self) -> Intake | None:
        receivers = build_receivers(self.engine.config)
        if not receivers:
            return None
        return Intake(
            receivers,
            self.targeted_pull,
            self.clock,
            self.stop,
            on_request=lambda source, outcome: self.metrics.webhooks.labels(source, outcome).inc(),
            on_notice=lambda source, notice: self.metrics.webhook_records.labels(
                source, notice.object, notice.kind.value
            ).inc(len(notice.record_ids)),
        )

    # --- health ----------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        from connector.web.state import healthz

        return healthz(self.engine, self.clock())

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.lock.acquire()
        schedule = self.engine.config.model.schedule
        first = self.clock()
        for synced in self.engine.objects():
            key = f"{synced.source}:{synced.name}"
            self._drain_locks[key] = threading.Lock()
            every = {
                "pull": (self.pull, schedule.sync_every, first),
                "writeback": (self.drain, schedule.writeback_every, first + timedelta(seconds=2)),
                "timers": (self.timers, schedule.timers_every, first + timedelta(seconds=5)),
                "reconcile": (self.reconcile, schedule.reconcile_every, first + schedule.reconcile_every),
            }
            for job, (func, interval, start_at) in every.items():
                self.scheduler.add_job(
                    func,
                    "interval",
                    args=[synced],
                    seconds=interval.total_seconds(),
                    id=f"{job}:{key}",
                    next_run_time=start_at,
                    name=f"{job} {key}",
                )
        self.intake = self._intake()
        server = self.engine.config.model.server
        if server is None and self.intake is not None:
            server = Server()  # webhooks need an address: the default one, loopback (behind a proxy)
        if server is not None:
            self._servers = [serve(server, self.metrics, self.engine, self.clock, self.intake)]
            log.info("health page on http://%s/ (also /healthz, /metrics)", server.listen)
            if self.intake is not None:
                if server.webhooks is not None:
                    self._servers.append(serve_webhooks(server.webhooks, self.intake))
                where = server.webhooks or server.listen
                log.info("webhooks for %s on http://%s/webhooks/<source>", ", ".join(self.intake.receivers), where)
        self.scheduler.start()
        if self.intake is not None:
            self.intake.start()
        log.info("connector running: %d objects", len(self.engine.objects()))

    def shutdown(self) -> bool:
        """Stop taking work; let running jobs reach a safe point; stop. False: a job was still running."""
        self.stop.set()
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + STOP_GRACE
        executor = self.scheduler._lookup_executor("default")
        pool = getattr(executor, "_pool", None)
        finished = True
        if pool is not None:
            waiter = threading.Thread(target=pool.shutdown, kwargs={"wait": True}, daemon=True)
            waiter.start()
            waiter.join(max(0.0, deadline - time.monotonic()))
            finished = not waiter.is_alive()
        for server in self._servers:
            server.shutdown()
        if self.intake is not None:
            self.intake.close()
        self.lock.release()
        if finished:
            log.info("connector stopped")
        else:
            log.warning(
                "connector stopped: a job was still waiting on a CRM or the database after %.0fs and was "
                "abandoned; what it had not committed is done again on the next start", STOP_GRACE,
            )
        return finished

    def run_forever(self) -> None:
        if self.stop.is_set():  # stopped while starting up
            return
        self.start()
        try:
            while not self.stop.wait(0.5):
                pass
        finally:
            finished = self.shutdown()
        if not finished:
            # The pool's threads are not daemons: the interpreter would wait at exit for the CRM call
            # in hand, however long its socket timeout. Exit now; the logs are flushed first.
            logging.shutdown()
            os._exit(0)


def connection_lost(exc: DBAPIError) -> bool:
    """The database connection is gone (not a constraint, a syntax error or a lock timeout)."""
    if exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        return any(w in text for w in ("terminat", "server closed the connection", "connection", "consuming input"))
    return False


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM / SIGINT set `stop`. Installed first thing, so a signal during start-up is clean too."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the page in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    retry.stop_on(stop)  # a CRM wait during start-up (the first login) ends on the signal too
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
