"""`connector run`: the scheduled daemon.

APScheduler decides *when*; each job claims its work itself (an advisory lock per object on
PostgreSQL, SKIP LOCKED outbox claims), so several daemons can share one database. One object's
failure never stops another's. SIGTERM / SIGINT set a stop flag that jobs check between pages and
batches: the page in hand is committed whole, then the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from connector.config import SyncedObject
from connector.cycle import Jobs, ObjectOutcome
from connector.engine import Engine
from connector.locks import DaemonLock, object_lock
from connector.metrics import Metrics
from connector.store import repo
from connector.web.server import serve

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
        self.jobs = Jobs(engine, self.stop)
        self.metrics = Metrics()
        self.lock = DaemonLock(engine.store.engine)
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        self._server: Any = None

    # --- jobs ------------------------------------------------------------------------------------
    def _run(self, job: str, synced: SyncedObject, work: Callable[[ObjectOutcome], None], *, locked: bool) -> None:
        if self.stop.is_set():
            return
        now = self.clock()
        if self._backing_off(synced, now):
            return
        outcome = ObjectOutcome(synced.source, synced.name)
        started = time.monotonic()
        try:
            if locked:
                with object_lock(self.engine.store.engine, synced.source, synced.name) as held:
                    if not held:
                        return  # another daemon is on this object right now
                    work(outcome)
            else:
                work(outcome)
        except Exception:  # a bug must be reported, never silently end the job for good
            log.exception("%s %s: the %s job failed", synced.source, synced.name, job)
            self.metrics.failures.labels(synced.source, synced.name, job).inc()
            return
        finally:
            self.metrics.cycle_seconds.labels(synced.source, synced.name, job).observe(time.monotonic() - started)
        if outcome.error:
            self.metrics.failures.labels(synced.source, synced.name, job).inc()
        self.metrics.observe(outcome)
        self._report(job, outcome)

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

    def _notify(self) -> None:
        try:
            from connector.notify import notify_job
        except ImportError:  # notifications are optional
            return
        notify_job(self.engine, self.clock())

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
        server = self.engine.config.model.server
        if server is not None:
            self._server = serve(server, self.metrics, self.engine, self.clock)
            log.info("health page on http://%s/ (also /healthz, /metrics)", server.listen)
        self.scheduler.start()
        log.info("connector running: %d objects", len(self.engine.objects()))

    def shutdown(self) -> None:
        """Stop taking work; let running jobs reach a safe point; stop."""
        self.stop.set()
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + STOP_GRACE
        executor = self.scheduler._lookup_executor("default")
        pool = getattr(executor, "_pool", None)
        if pool is not None:
            waiter = threading.Thread(target=pool.shutdown, kwargs={"wait": True}, daemon=True)
            waiter.start()
            waiter.join(max(0.0, deadline - time.monotonic()))
        if self._server is not None:
            self._server.shutdown()
        self.lock.release()
        log.info("connector stopped")

    def run_forever(self) -> None:
        if self.stop.is_set():  # stopped while starting up
            return
        self.start()
        try:
            while not self.stop.wait(0.5):
                pass
        finally:
            self.shutdown()


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM / SIGINT set `stop`. Installed first thing, so a signal during start-up is clean too."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the page in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
