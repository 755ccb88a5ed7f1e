"""`connector run` as a real process: signals, several daemons on one PostgreSQL, kill -9.

The sandbox CRMs run in this process (threads on loopback); every daemon and every `sync --once` is a
child process talking to them over real HTTP(S), so SIGTERM, SIGINT, exit codes and kill -9 are the
operating system's. The store is read with plain SQL from here. Each child's output is kept in a file
and printed when an assertion fails.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox
from tests.daemon_support import (
    CLOSED_LEAD,
    CONNECTED_CONTACT,
    NEW_CONTACT,
    NEW_LEAD,
    WORKING_LEAD,
    Proc,
    Procs,
    StoreReader,
    as_utc,
    sigterm_and_wait,
    wait_for,
    write_config,
)

LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) ")  # logs.configure("text")
DURATION = 60.0  # seconds of CRM changes while two daemons share one PostgreSQL (the issue asks for 60)
LEAD_STATUSES = [NEW_LEAD, WORKING_LEAD, "Closed - Converted", CLOSED_LEAD]
STAGE_OF_LEAD = dict(zip(LEAD_STATUSES, ["New", "Working", "Converted", "Unresponsive"], strict=True))
STAGE_OF_CONTACT = {
    "NEW": "New",
    "ATTEMPTED_TO_CONTACT": "Attempted",
    "CONNECTED": "Connected",
    "BAD_TIMING": "Bad Timing",
    "UNQUALIFIED": "Unqualified",
}


# --- fixtures ------------------------------------------------------------------------------------
class Opened:
    """Sandboxes and store readers a test opens; all are stopped or closed at its end."""

    def __init__(self) -> None:
        self.sandboxes: list[SalesforceSandbox | HubSpotSandbox] = []
        self.readers: list[StoreReader] = []

    def salesforce(self, **kwargs: Any) -> SalesforceSandbox:
        sandbox = SalesforceSandbox(**kwargs)
        sandbox.start()
        self.sandboxes.append(sandbox)
        return sandbox

    def hubspot(self, **kwargs: Any) -> HubSpotSandbox:
        sandbox = HubSpotSandbox(**kwargs)
        sandbox.start()
        self.sandboxes.append(sandbox)
        return sandbox

    def reader(self, url: str) -> StoreReader:
        reader = StoreReader(url)
        self.readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        for sandbox in self.sandboxes:
            sandbox.stop()


@pytest.fixture
def opened() -> Iterator[Opened]:
    things = Opened()
    try:
        yield things
    finally:
        things.close()


@pytest.fixture
def children(tmp_path: Path, opened: Opened) -> Iterator[Procs]:
    """Child processes of the test; any still running at the end are killed, all files closed.

    Set up after `opened` (and after `pg_url` where a test asks for it first), so torn down before:
    no child outlives the sandboxes it talks to or the schema it writes to."""
    folder = tmp_path / "logs"
    folder.mkdir()
    started = Procs(folder)
    try:
        yield started
    finally:
        started.close()


def recently() -> datetime:
    """A whole second an hour ago: when seeded records last changed (recent: no inactivity timer is due)."""
    return (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def seed_leads(
    sf: SalesforceSandbox, count: int, *, chunk: int = 1000, mixed: bool = True, base: datetime | None = None
) -> dict[str, datetime]:
    """`count` leads in chunks; later chunks get *earlier* SystemModstamps, so (SystemModstamp, Id)
    order is not creation order. Returns Id -> SystemModstamp."""
    stamps: dict[str, datetime] = {}
    base = base or recently()
    chunks = (count + chunk - 1) // chunk
    for n in range(chunks):
        size = min(chunk, count - n * chunk)
        at = base + timedelta(seconds=10 * (chunks - n))  # further apart than the pull's 5 s lookback
        rows = [
            {
                "FirstName": f"Lead{n * chunk + i}",
                "LastName": "Daemon",
                "Company": f"Acme {i % 53}",
                "Status": LEAD_STATUSES[(n * chunk + i) % 4] if mixed else NEW_LEAD,
            }
            for i in range(size)
        ]
        stamps.update(dict.fromkeys(sf.seed("Lead", rows, modstamp=at), at))
    return stamps


def reply_to_lead(sf: SalesforceSandbox, lead: str, *, at: datetime | None = None) -> None:
    task = {"WhoId": lead, "Type": "Email", "Subject": "RE: your pricing question", "Status": "Completed"}
    if at is None:
        sf.seed("Task", [task])
    else:
        sf.seed("Task", [task], modstamp=at)


def explain_failure(children: Procs) -> Callable[[str], str]:
    """A message with every child's output, for assertions whose failure needs the logs."""
    return lambda message: f"{message}\n{children.diagnostics()}"


def sync_once(children: Procs, config: Path, name: str = "sync-once", timeout: float = 180) -> Proc:
    return children.run(name, "sync", "--once", "--config", str(config), timeout=timeout)


# --- 1. a signal in the middle of the initial pull ------------------------------------------------
@pytest.mark.parametrize(
    ("signum", "leads", "page_size"),
    [
        pytest.param(signal.SIGTERM, 20_000, 1000, id="SIGTERM", marks=pytest.mark.slow),
        pytest.param(signal.SIGINT, 4_000, 200, id="SIGINT"),
    ],
)
def test_a_signal_mid_sync_commits_the_page_in_hand_exits_0_and_sync_once_finishes(
    tmp_path: Path, children: Procs, opened: Opened, signum: int, leads: int, page_size: int
) -> None:
    why = explain_failure(children)
    sf = opened.salesforce(latency=0.02, seed=3)  # 20 ms a call, pages of `page_size`: the pull takes a while
    stamps = seed_leads(sf, leads)
    database = f"sqlite:///{tmp_path}/connector.db"
    config = write_config(tmp_path, database, sf=sf, page_size=page_size)
    store = opened.reader(database)

    daemon = children.start("run", "run", "--config", str(config))
    wait_for(lambda: store.cursor("sfdc", "Lead") or not daemon.running(), 120, "the first page to be committed")
    assert daemon.running(), why("the daemon ended before it was signalled")
    sent = daemon.signal(signum)
    code = daemon.wait(10.0)
    took = time.monotonic() - sent
    assert code == 0, why(f"{signal.Signals(signum).name}: exit {code} after {took:.1f}s (want 0 within 10s)")
    assert "connector stopped" in daemon.stderr(), why("no clean stop was logged")

    # Nothing half-written: the store holds exactly the records at or before the cursor, in the
    # order the pull reads them, and each of them with its history entry.
    cursor = store.cursor("sfdc", "Lead")
    assert cursor is not None
    at, last_id = as_utc(cursor[0]), cursor[1]
    assert last_id is not None
    stored = store.records("sfdc", "Lead")
    expected = {rid for rid, stamp in stamps.items() if (stamp, rid) <= (at, last_id)}
    assert set(stored) == expected, why(
        f"{len(set(stored) - expected)} records beyond the cursor, {len(expected - set(stored))} missing before it"
    )
    assert 0 < len(stored) < leads, why(f"{len(stored)} of {leads} pulled: the signal did not come mid-pull")
    assert store.without_history("sfdc", "Lead") == []
    history = store.history("sfdc", "Lead")
    assert {rid: len(entries) for rid, entries in history.items()} == dict.fromkeys(expected, 1)

    finish = sync_once(children, config)
    assert finish.popen.returncode == 0, why("sync --once failed")
    assert set(store.records("sfdc", "Lead")) == set(stamps)
    assert store.scalar("SELECT count(*) FROM records") == leads  # each lead exactly once
    history = store.history("sfdc", "Lead")
    assert {rid: len(entries) for rid, entries in history.items()} == dict.fromkeys(stamps, 1)
    first_seen = {entries[0][:3] for entries in history.values()}
    assert first_seen == {(None, STAGE_OF_LEAD[s], "external") for s in LEAD_STATUSES}


# --- 2. several daemons -----------------------------------------------------------------------------
def test_a_second_daemon_on_the_same_sqlite_file_refuses_to_start(
    tmp_path: Path, children: Procs, opened: Opened
) -> None:
    why = explain_failure(children)
    sf = opened.salesforce(seed=4)
    seed_leads(sf, 50)
    database = f"sqlite:///{tmp_path}/connector.db"
    config = write_config(tmp_path, database, sf=sf)
    first = children.start("first", "run", "--config", str(config))
    wait_for(lambda: "connector running" in first.stderr() or not first.running(), 60, "the first daemon to run")
    assert first.running(), why("the first daemon did not start")

    second = children.start("second", "run", "--config", str(config))
    code = second.wait(60)
    assert code == 2, why(f"the second daemon: exit {code}, want 2")
    message = second.stderr()
    assert "already running" in message and str(first.pid) in message, why("the refusal does not say why")
    assert "SQLite" in message and "PostgreSQL" in message, why("the refusal does not say what to do")
    assert "Traceback" not in message
    assert first.running(), why("the first daemon stopped")
    assert sigterm_and_wait([first])["first"][0] == 0, why("the first daemon did not stop cleanly")


def test_daemons_started_at_once_on_a_fresh_postgresql_both_run(
    tmp_path: Path, pg_url: str, children: Procs, opened: Opened
) -> None:
    """Both migrate a new database at once unless they take turns (one died: UniqueViolation)."""
    why = explain_failure(children)
    sf = opened.salesforce(seed=6)
    seed_leads(sf, 20)
    config = write_config(tmp_path, pg_url, sf=sf)
    store = opened.reader(pg_url)
    # "At once", made certain: both daemons find the schema empty at the same moment. The test holds
    # the (empty) revision table locked until both are waiting to read it, then lets them go.
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    gate = store.engine.connect()
    try:
        gate.exec_driver_sql("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        daemons = [children.start(name, "run", "--config", str(config)) for name in ("daemon-a", "daemon-b")]
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'alembic_version'::regclass"
        wait_for(lambda: store.scalar(waiting) == 2 or not all(d.running() for d in daemons), 90, "both daemons")
        gate.commit()
    finally:
        gate.close()
    for daemon in daemons:
        wait_for(lambda d=daemon: "connector running" in d.stderr() or not d.running(), 90, f"{daemon.name}")
    assert all(d.running() for d in daemons), why("a daemon died starting up")
    stopped = sigterm_and_wait(daemons)
    assert [code for code, _ in stopped.values()] == [0, 0], why(f"exit codes: {stopped}")


class Driver(threading.Thread):
    """Makes changes in both CRMs for `duration` seconds, the way people and prospects do.

    Replies go to records still in their first stage, each record at most once, so each such record
    is moved once by the `replied` trigger and needs exactly one write-back. Person edits go to
    records nobody replied to, and to replied records once our write-back is confirmed in the store:
    the person's value must stay in the CRM.
    """

    def __init__(
        self,
        sf: SalesforceSandbox,
        hs: HubSpotSandbox,
        leads: list[str],
        contacts: list[str],
        store: StoreReader,
        duration: float,
        seed: int = 7,
    ) -> None:
        super().__init__(name="crm-driver", daemon=True)
        self.sf, self.hs, self.store, self.duration = sf, hs, store, duration
        self.rng = random.Random(seed)
        self.fresh = {"Lead": list(leads), "contacts": list(contacts)}
        for pool in self.fresh.values():
            self.rng.shuffle(pool)
        self.replied: dict[str, list[str]] = {"Lead": [], "contacts": []}
        self.edited: dict[str, dict[str, str]] = {"Lead": {}, "contacts": {}}  # id -> the person's status
        self.late: dict[str, set[str]] = {"Lead": set(), "contacts": set()}  # replied, then edited
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._drive()
        except BaseException as exc:  # reported by the test after join()
            self.error = exc

    def _drive(self) -> None:
        deadline, tick = time.monotonic() + self.duration, 0
        while time.monotonic() < deadline and not self.halt.is_set():
            lead, contact = self.fresh["Lead"].pop(), self.fresh["contacts"].pop()
            reply_to_lead(self.sf, lead)
            self.hs.add_engagement("emails", contact, {"hs_email_direction": "INCOMING_EMAIL"})
            self.replied["Lead"].append(lead)
            self.replied["contacts"].append(contact)
            if tick % 4 == 1:
                lead, contact = self.fresh["Lead"].pop(), self.fresh["contacts"].pop()
                self._edit("Lead", lead, self.rng.choice([WORKING_LEAD, CLOSED_LEAD]))
                self._edit("contacts", contact, self.rng.choice(["ATTEMPTED_TO_CONTACT", "UNQUALIFIED"]))
            if tick % 4 == 3:
                self._edit_a_written_record("Lead", CLOSED_LEAD)
                self._edit_a_written_record("contacts", "BAD_TIMING")
            tick += 1
            self.halt.wait(0.25)

    def _edit(self, obj: str, record: str, status: str) -> None:
        if obj == "Lead":
            self.sf.edit_as_person("Lead", record, Status=status)
        else:
            self.hs.edit_as_person("contacts", record, hs_lead_status=status)
        self.edited[obj][record] = status

    def _edit_a_written_record(self, obj: str, status: str) -> None:
        """A person edits a record our write-back reached, once the outbox confirmed it."""
        source = "sfdc" if obj == "Lead" else "hubspot"
        done = {
            r[0]
            for r in self.store.rows(
                "SELECT external_id FROM outbox WHERE source = :s AND object = :o AND state = 'done'", s=source, o=obj
            )
        }
        candidates = sorted(done - self.late[obj] - set(self.edited[obj]))
        if candidates:
            record = self.rng.choice(candidates)
            self.late[obj].add(record)
            self._edit(obj, record, status)


def logged_errors(log: str) -> list[str]:
    """Each ERROR record of a daemon's text log, with its traceback."""
    records: list[tuple[str, str]] = []
    for line in log.splitlines():
        start = LOG_RECORD.match(line)
        if start:
            records.append((start["level"], line))
        elif records:
            records[-1] = (records[-1][0], records[-1][1] + "\n" + line)
    return [text for level, text in records if level in ("ERROR", "CRITICAL")]


def _worked(log: str) -> int:
    """Job lines of a daemon's log that pulled or wrote something."""
    lines = [line for line in log.splitlines() if "pulled " in line and ("pull:" in line or "writeback:" in line)]
    return sum(1 for line in lines if "pulled 0 " not in line or ", written 0," not in line)


@pytest.mark.slow
def test_two_daemons_share_one_postgresql_and_write_every_change_exactly_once(
    tmp_path: Path, pg_url: str, children: Procs, opened: Opened
) -> None:
    why = explain_failure(children)
    sf = opened.salesforce(latency=0.005, seed=5)
    hs = opened.hubspot(seed=5)
    leads = list(seed_leads(sf, 1000, mixed=False))
    contacts = hs.seed("contacts", [{"email": f"c{i}@example.com", "hs_lead_status": NEW_CONTACT} for i in range(1000)])
    config = write_config(tmp_path, pg_url, sf=sf, hs=hs)
    store = opened.reader(pg_url)

    # One after the other (a start at the same instant is test_daemons_started_at_once_...): the
    # changes begin when both are up and the initial pulls are in.
    daemons = []
    for name in ("daemon-a", "daemon-b"):
        daemon = children.start(name, "run", "--config", str(config))
        daemons.append(daemon)
        wait_for(lambda d=daemon: "connector running" in d.stderr() or not d.running(), 90, f"{name} to start")

    def pulled() -> bool:
        assert all(d.running() for d in daemons), why("a daemon ended early")
        counts = dict(store.rows("SELECT object, count(*) FROM records GROUP BY object"))
        return counts.get("Lead") == 1000 and counts.get("contacts") == 1000

    wait_for(pulled, 120, "the initial pulls")
    driver = Driver(sf, hs, leads, contacts, store, DURATION)
    driver.start()
    driver.join(DURATION + 60)
    assert not driver.is_alive() and driver.error is None, f"the driver failed: {driver.error!r}"
    assert all(d.running() for d in daemons), why("a daemon ended during the run")
    stopped = sigterm_and_wait(daemons, timeout=15)
    assert {name: code for name, (code, _) in stopped.items()} == {"daemon-a": 0, "daemon-b": 0}, why(
        f"exit codes and seconds after SIGTERM: {stopped}"
    )
    finish = sync_once(children, config)
    assert finish.popen.returncode == 0, why("the final sync --once failed")

    # Both daemons did work, and the pull lock let one pull per object run at a time: every record
    # was seen for the first time exactly once, and moved by its reply exactly once.
    for daemon in daemons:
        assert _worked(daemon.stderr()) > 0, why(f"{daemon.name} did no work")
    replied = {"Lead": set(driver.replied["Lead"]), "contacts": set(driver.replied["contacts"])}
    assert len(replied["Lead"]) >= DURATION, f"only {len(replied['Lead'])} replies in {DURATION}s"
    moves: dict[str, Counter[str]] = {}
    for source, obj, moved_to in (("sfdc", "Lead", "Working"), ("hubspot", "contacts", "Connected")):
        history = store.history(source, obj)
        assert len(history) == 1000
        first_seen = Counter(rid for rid, entries in history.items() for e in entries if e[0] is None)
        assert set(first_seen.values()) == {1}, f"{obj}: first-seen entries repeated: {first_seen.most_common(3)}"
        # The moves that need a write-back: the trigger's, one per reply.
        moves[obj] = Counter(rid for rid, entries in history.items() for e in entries if e[2] == "event" and not e[4])
        assert moves[obj] == Counter(dict.fromkeys(replied[obj], 1)), why(f"{obj}: trigger moves")
        for rid in replied[obj]:
            assert ("New", moved_to, "event", "replied", False) in history[rid]
        assert store.outbox(source, obj).keys() <= {"done", "cancelled"}, store.outbox(source, obj)

    # Every change written to the CRM exactly once: per record, as many writes as trigger moves.
    for obj, written, field, value in (
        ("Lead", sf.writes("Lead"), "Status", WORKING_LEAD),
        ("contacts", hs.writes("contacts"), "hs_lead_status", CONNECTED_CONTACT),
    ):
        per_record = Counter(rid for rid, _ in written)
        assert per_record == moves[obj], why(
            f"{obj} writes: {per_record.most_common(3)}; unwritten {sorted(set(moves[obj]) - set(per_record))[:5]}"
        )
        assert {fields[field] for _, fields in written} == {value}

    # People's edits are never overwritten: the CRM keeps them, the store follows them.
    assert len(driver.late["Lead"]) >= 3 and len(driver.edited["Lead"]) >= 10, driver.edited
    leads_now = store.records("sfdc", "Lead")
    for rid, status in driver.edited["Lead"].items():
        assert sf.record("Lead", rid)["Status"] == status
        assert leads_now[rid] == (STAGE_OF_LEAD[status], "external", status), rid
    contacts_now = store.records("hubspot", "contacts")
    for rid, status in driver.edited["contacts"].items():
        assert hs.record("contacts", rid)["hs_lead_status"] == status
        assert contacts_now[rid] == (STAGE_OF_CONTACT[status], "external", status), rid

    # No job failed (a deadlock between one daemon's pull and the other's drain was one way).
    for daemon in daemons:
        assert logged_errors(daemon.stderr()) == [], why(f"{daemon.name} logged errors")


class HeldWrites:
    """The real Salesforce source, but a write-back batch, once the CRM took it, waits for `release`:
    the drain is caught between the CRM's answer and its confirmation (on PostgreSQL, holding its locks)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.sent, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def write_statuses(self, obj: str, writes: Any) -> Any:
        outcomes = self.source.write_statuses(obj, writes)
        self.sent.set()
        assert self.release.wait(60), "never released"
        return outcomes


class HeldDrain:
    """The connector's own engine in this process, as another daemon (or the daemon's other job): a
    lead replied, and the drain of its write-back is held once the CRM took it."""

    def __init__(self, config_path: Path, lead: str) -> None:
        from sqlalchemy import event

        from connector.config import load_config
        from connector.engine import Engine
        from connector.sources.factory import open_sources
        from connector.store.db import open_store

        self.config = load_config(config_path)
        self.store = open_store(self.config.database_url)
        self.backends: set[int] = set()  # on PostgreSQL: this drain's server processes
        if self.store.dialect == "postgresql":
            event.listen(self.store.engine, "connect", lambda dbapi, _r: self.backends.add(dbapi.info.backend_pid))
            self.store.engine.dispose()  # the connection that migrated is not counted: open new ones
        self.sources = open_sources(self.config)
        self.held = HeldWrites(self.sources["sfdc"])
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._drain, name="held-drain")
        engine = Engine(self.config, self.store, self.sources)
        self.synced = engine.synced("sfdc", "Lead")
        now = datetime.now(UTC)
        engine.pull(self.synced, now)
        engine.feed_event(self.synced, lead, "email_replied", now, now)  # queues "Working - Contacted"

    def _drain(self) -> None:
        from connector.writeback import Drain

        try:
            Drain(self.store, self.held, self.config.model.writeback).run(self.synced, datetime.now(UTC))
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> None:
        """Returns once the CRM took the write."""
        self.thread.start()
        assert self.held.sent.wait(60), "the drain sent nothing"

    def finish(self) -> None:
        self.held.release.set()
        if self.thread.ident is not None:
            self.thread.join(30)

    def close(self) -> None:
        self.finish()
        for source in self.sources.values():
            source.close()
        self.store.close()


def test_a_pull_and_another_daemons_drain_do_not_deadlock(
    tmp_path: Path, pg_url: str, children: Procs, opened: Opened
) -> None:
    """A person edits a lead right after our write-back reached the CRM, while the drain that sent it
    (another daemon's: here, the test's) still holds its outbox lock; a daemon pulls the edit.

    The drain locks outbox rows, then updates records; a pull that updated records, then outbox rows
    deadlocked with it (PostgreSQL aborted one: a failed pull, or a drain whose writes went unconfirmed).
    """
    why = explain_failure(children)
    sf = opened.salesforce(seed=12)
    lead = next(iter(seed_leads(sf, 3, mixed=False)))
    config = write_config(tmp_path, pg_url, sf=sf)
    other = HeldDrain(config, lead)
    try:
        other.start()
        assert sf.record("Lead", lead)["Status"] == WORKING_LEAD
        sf.edit_as_person("Lead", lead, Status=CLOSED_LEAD)
        daemon = children.start("daemon", "run", "--config", str(config))
        blocked = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE cardinality(pg_blocking_pids(pid)) > 0 AND pg_blocking_pids(pid) && CAST(:mine AS int[])"
        )
        reader = opened.reader(pg_url)
        pulled = lambda: "sfdc Lead pull:" in daemon.stderr() or logged_errors(daemon.stderr())  # noqa: E731
        wait_for(
            lambda: reader.scalar(blocked, mine=sorted(other.backends)) or pulled() or not daemon.running(),
            90,
            "the daemon's pull to wait for the drain's lock",
        )
        other.finish()
        wait_for(pulled, 60, "the pull")
        code = sigterm_and_wait([daemon])["daemon"][0]
    finally:
        other.close()
    assert other.errors == [] and code == 0, why(f"drain: {other.errors!r}; daemon exit {code}")
    assert logged_errors(daemon.stderr()) == [], why("the daemon logged errors")
    # The person's edit stands in the CRM, and the store follows it.
    assert sf.record("Lead", lead)["Status"] == CLOSED_LEAD
    assert reader.records("sfdc", "Lead")[lead] == ("Unresponsive", "external", CLOSED_LEAD)


def test_a_person_edit_pulled_while_our_write_is_confirmed_is_not_forgotten(
    tmp_path: Path, children: Procs, opened: Opened
) -> None:
    """On SQLite the daemon's pull and write-back jobs run side by side and the drain sends outside
    any transaction: a pull may read a person's edit that came after our write, before the drain
    confirms that write. The confirmation must not make the store believe the CRM holds our status."""
    why = explain_failure(children)
    sf = opened.salesforce(seed=13)
    lead = next(iter(seed_leads(sf, 3, mixed=False)))
    database = f"sqlite:///{tmp_path}/connector.db"
    config = write_config(tmp_path, database, sf=sf)
    store = opened.reader(database)
    drain = HeldDrain(config, lead)
    try:
        drain.start()
        sf.edit_as_person("Lead", lead, Status=CLOSED_LEAD)  # a rep closes it just after our write
        assert sync_once(children, config, "pull").popen.returncode == 0, why("the pull failed")
        assert store.records("sfdc", "Lead")[lead] == ("Unresponsive", "external", CLOSED_LEAD)
        drain.finish()
    finally:
        drain.close()
    assert drain.errors == []
    # The rep reopens it later: the store must follow, as it follows every status a person sets.
    sf.edit_as_person("Lead", lead, Status=WORKING_LEAD)
    assert sync_once(children, config, "pull-again").popen.returncode == 0, why("the second pull failed")
    assert store.records("sfdc", "Lead")[lead] == ("Working", "external", WORKING_LEAD), why(
        f"the store: {store.records('sfdc', 'Lead')[lead]}, the CRM: {sf.record('Lead', lead)['Status']}"
    )


# --- 3. kill -9 --------------------------------------------------------------------------------------
def write_calls(sf: SalesforceSandbox) -> int:
    """sObject Collections updates the sandbox has answered (logged before the answer goes out)."""
    return sum(1 for c in sf.server.calls() if c.method == "PATCH" and c.path.endswith("/composite/sobjects"))


def differences(crashed: dict[str, Any], clean: dict[str, Any], show: int = 5) -> str:
    differ = sorted(rid for rid in crashed.keys() | clean.keys() if crashed.get(rid) != clean.get(rid))
    sample = "; ".join(f"{rid}: {crashed.get(rid)} after the crashes, {clean.get(rid)} clean" for rid in differ[:show])
    return f"{len(differ)} records differ from the clean run, e.g. {sample}"


def final_state(store: StoreReader) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
    """(external_id -> (stage, set_by, remote_status), external_id -> history without times)."""
    return store.records("sfdc", "Lead"), store.history("sfdc", "Lead")


def test_kill_9_after_the_crm_took_a_write_before_it_was_confirmed(
    tmp_path: Path, children: Procs, opened: Opened
) -> None:
    """The narrowest crash window: the CRM applied a batch of write-backs, the outbox does not know yet.

    Reading our own status back must confirm the write, not pass for a person's change (rule 1),
    which would leave set_by 'external' (and lock a sticky stage against triggers)."""
    why = explain_failure(children)
    # 0.5 s a call: when the first batch of 200 is logged, the second is still on its way, and the
    # drain confirms nothing before both are answered.
    sf = opened.salesforce(latency=0.5, seed=8)
    leads = list(seed_leads(sf, 300, mixed=False))
    database = f"sqlite:///{tmp_path}/connector.db"
    config = write_config(tmp_path, database, sf=sf)
    store = opened.reader(database)
    # The first sync is the baseline (rule 4): the replies that matter come after it.
    assert sync_once(children, config, "baseline").popen.returncode == 0, why("the first sync failed")
    for lead in leads:
        reply_to_lead(sf, lead)
    victim = children.start("victim", "sync", "--once", "--config", str(config))
    wait_for(lambda: write_calls(sf) or not victim.running(), 120, "a write-back", every=0.005)
    victim.kill()
    assert victim.popen.returncode == -signal.SIGKILL, why("the victim ended before the kill")
    assert len(sf.writes("Lead")) == 200 and store.outbox("sfdc", "Lead") == {"pending": 300}, why(
        "the kill did not land between the CRM's answer and the confirmation"
    )

    assert sync_once(children, config).popen.returncode == 0, why("sync --once after the crash failed")
    assert {sf.record("Lead", lead)["Status"] for lead in leads} == {WORKING_LEAD}  # nothing lost
    assert store.outbox("sfdc", "Lead").keys() <= {"done", "cancelled"}
    written = Counter(rid for rid, _ in sf.writes("Lead"))
    assert set(written) == set(leads) and set(written.values()) <= {1, 2}  # at most resent once
    history = store.history("sfdc", "Lead")
    moved = ("New", "Working", "event", "replied", False)
    assert {rid: entries[1:] for rid, entries in history.items()} == {rid: [moved] for rid in leads}
    # As if there had been no crash: the trigger set the stage, the CRM holds its status.
    records, clean = store.records("sfdc", "Lead"), dict.fromkeys(leads, ("Working", "trigger", WORKING_LEAD))
    assert records == clean, differences(records, clean)


CRASHES = 10
CRASH_LEADS = 20_000
REPLIES_PER_RUN = 210  # more than one sObject Collections call (200) per drain


def kill_at(sf: SalesforceSandbox, victim: Proc, moment: tuple[str, float]) -> str:
    """kill -9 `victim` at `moment`: ("time", s) s after its first API call, or ("write", s) s after
    the CRM answered its next batch of write-backs. Returns what happened, for the failure message."""
    kind, delay = moment
    calls, writes = len(sf.server.calls()), write_calls(sf)
    if kind == "write":
        wait_for(lambda: write_calls(sf) > writes or not victim.running(), 120, f"{victim.name}'s write", every=0.005)
    else:
        wait_for(lambda: len(sf.server.calls()) > calls or not victim.running(), 60, f"{victim.name}'s first call")
    deadline = time.monotonic() + delay
    while victim.running() and time.monotonic() < deadline:
        time.sleep(0.005)
    if not victim.running():
        return f"{victim.name} ended by itself with exit {victim.popen.returncode}"
    victim.kill()
    return f"{victim.name} killed {delay:.2f}s after its {'write' if kind == 'write' else 'first call'}"


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_duplicates_no_history(
    tmp_path: Path, children: Procs, opened: Opened
) -> None:
    why = explain_failure(children)
    rng = random.Random(20250603)
    base = recently()
    # Two identical orgs (same seed, same Ids, same SystemModstamps): one for the run that is killed
    # ten times over, one for a clean run to compare with.
    crashed_sf = opened.salesforce(latency=0.05, seed=9)
    clean_sf = opened.salesforce(seed=9)
    leads = list(seed_leads(crashed_sf, CRASH_LEADS, base=base))
    assert list(seed_leads(clean_sf, CRASH_LEADS, base=base)) == leads
    new_leads = leads[::4]  # seed_leads mixes the statuses: every fourth lead is Open - Not Contacted
    rng.shuffle(new_leads)
    batches = [new_leads[REPLIES_PER_RUN * n : REPLIES_PER_RUN * (n + 1)] for n in range(CRASHES + 1)]
    databases = {run: f"sqlite:///{tmp_path}/{run}.db" for run in ("crashed", "clean")}
    folders = {run: tmp_path / run for run in databases}
    for folder in folders.values():
        folder.mkdir()
    config = write_config(folders["crashed"], databases["crashed"], sf=crashed_sf)
    clean_config = write_config(folders["clean"], databases["clean"], sf=clean_sf)
    # The first sync of each is its baseline (rule 4): the replies below all come after it.
    for name, cfg in (("crashed-baseline", config), ("clean-baseline", clean_config)):
        assert sync_once(children, cfg, name).popen.returncode == 0, why("the first sync failed")
    after = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (after - datetime.now(UTC)).total_seconds()) + 0.1)
    for sf in (crashed_sf, clean_sf):
        for lead in batches[0]:
            reply_to_lead(sf, lead, at=after)
        for lead in leads[1:200:4]:  # replies from Working leads: no trigger moves them
            reply_to_lead(sf, lead, at=after)
    for batch in batches[1:]:  # the clean org gets at once the replies the other gets between crashes
        for lead in batch:
            reply_to_lead(clean_sf, lead)
    clean_run = children.start("clean-0", "sync", "--once", "--config", str(clean_config))  # meanwhile
    # Random moments, seeded: most a random time into the run, three right after the CRM took a
    # batch of write-backs (when it has written 200 records and the outbox confirmed none of them).
    at_writes = set(rng.sample(range(CRASHES), 3))
    moments = [("write" if n in at_writes else "time", rng.uniform(0.0, 2.0)) for n in range(CRASHES)]
    happened = []
    for n, moment in enumerate(moments):
        for lead in batches[n + 1]:  # replies keep arriving between the crashes
            reply_to_lead(crashed_sf, lead)
        command = ("sync", "--once") if n % 2 == 0 else ("run",)
        victim = children.start(f"victim-{n}-{command[0]}", *command, "--config", str(config))
        happened.append(kill_at(crashed_sf, victim, moment))
        assert victim.popen.returncode in (0, -signal.SIGKILL), why(f"{happened[-1]}")
    killed = sum("killed" in line for line in happened)
    assert killed >= CRASHES // 2, why("\n".join(happened))
    for n in range(2):
        assert sync_once(children, config, f"crashed-final-{n}").popen.returncode == 0, why("the final sync failed")

    assert clean_run.wait(180) == 0, why("the clean sync failed")
    assert sync_once(children, clean_config, "clean-1").popen.returncode == 0, why("the clean sync failed")

    crashed, clean = opened.reader(databases["crashed"]), opened.reader(databases["clean"])
    crashed_records, crashed_history = final_state(crashed)
    clean_records, clean_history = final_state(clean)
    replied = [lead for batch in batches for lead in batch]
    assert len(clean_records) == CRASH_LEADS and sum(r[0] == "Working" for r in clean_records.values()) > 0
    # No history entry is lost or duplicated: per record, the same moves for the same causes.
    assert crashed_history == clean_history, why(differences(crashed_history, clean_history))
    # No write-back is lost: every reply's status is in the CRM, and nothing waits or died.
    assert {crashed_sf.record("Lead", lead)["Status"] for lead in replied} == {WORKING_LEAD}
    assert crashed.outbox("sfdc", "Lead").keys() <= {"done", "cancelled"}, crashed.outbox("sfdc", "Lead")
    # A resent write is allowed (a kill after the CRM took a batch, before the outbox confirmed it):
    # a record may appear more than once in writes(), always with the same value.
    written = crashed_sf.writes("Lead")
    assert {rid for rid, _ in written} == set(replied)
    assert {fields["Status"] for _, fields in written} == {WORKING_LEAD}
    # The same final records as the clean run: stage, who set it, and the status the CRM holds.
    assert crashed_records == clean_records, why("\n".join([*happened, differences(crashed_records, clean_records)]))
