"""`connector run` stops within 10 s of SIGTERM whatever the CRM does, and shrugs off a lost database.

Real child processes against the loopback sandboxes (see tests/daemon_support.py). Each stop case
puts the CRM in one bad state (unreachable, answering after 30 s, failing every call mid-batch),
signals the daemon, and measures the time to its exit.
"""

# ruff: noqa: F811  (the fixtures `children` and `opened` come from test_daemon)
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.daemon_support import WORKING_LEAD, Procs, StoreReader, sigterm_and_wait, wait_for, write_config
from tests.e2e.test_daemon import (  # noqa: F401  (fixtures)
    Opened,
    children,
    explain_failure,
    opened,
    reply_to_lead,
    seed_leads,
)

BOUND = 10.0  # seconds from SIGTERM to exit, the operator's promise


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed: connection refused


def test_sigterm_while_the_crm_is_unreachable(tmp_path: Path, children: Procs, opened: Opened) -> None:
    """Every call is refused: the daemon is in its retry backoff (login, then pulls) when told to stop."""
    sf = opened.salesforce(seed=11)
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", sf=sf)
    config.write_text(config.read_text().replace(sf.url, f"https://127.0.0.1:{closed_port()}"))
    daemon = children.start("daemon", "run", "--config", str(config))
    wait_for(lambda: "connector running" in daemon.stderr() or not daemon.running(), 60, "the daemon to start")
    time.sleep(8)  # past the first refusals, into the backoff (before the fix: 11.4 s from SIGTERM to exit)
    assert daemon.running(), explain_failure(children)("the daemon died")
    code, seconds = sigterm_and_wait([daemon], timeout=30)["daemon"]
    assert code in (0, 2) and seconds < BOUND, explain_failure(children)(f"exit {code} after {seconds:.1f}s")
    assert "Traceback" not in daemon.stderr(), daemon.stderr()


def test_sigterm_while_the_crm_takes_30_seconds_to_answer(tmp_path: Path, children: Procs, opened: Opened) -> None:
    sf = opened.salesforce(seed=12)
    seed_leads(sf, 20)
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", sf=sf)
    daemon = children.start("daemon", "run", "--config", str(config))
    wait_for(lambda: "connector running" in daemon.stderr() or not daemon.running(), 60, "the daemon to start")
    sf.server.latency = 30.0  # every call from now on hangs for 30 s (a socket timeout of 60 s allows it)
    time.sleep(3)  # a pull is inside a call
    code, seconds = sigterm_and_wait([daemon], timeout=40)["daemon"]
    sf.server.latency = 0.0
    assert code == 0 and seconds < BOUND, explain_failure(children)(f"exit {code} after {seconds:.1f}s")
    assert "abandoned" in daemon.stderr()


def test_sigterm_mid_write_back_while_every_call_fails_leaves_the_outbox_pending(
    tmp_path: Path, children: Procs, opened: Opened
) -> None:
    why = explain_failure(children)
    sf = opened.salesforce(seed=13)
    leads = list(seed_leads(sf, 30, mixed=False))
    db = tmp_path / "c.db"
    config = write_config(tmp_path, f"sqlite:///{db}", sf=sf)
    store = StoreReader(f"sqlite:///{db}")
    try:
        # Sync, then replies that move ten leads: ten write-backs queued, sent while the CRM fails.
        first = children.run("sync-once", "sync", "--once", "--config", str(config))
        assert first.popen.returncode == 0, why("the first sync failed")
        for lead in leads[:10]:
            reply_to_lead(sf, lead)
        config.write_text(config.read_text().replace('"enabled": true', '"enabled": false'))
        children.run("sync-once-2", "sync", "--once", "--config", str(config))
        assert store.outbox("sfdc", "Lead") == {"pending": 10}, why(f"outbox {store.outbox('sfdc', 'Lead')}")
        config.write_text(config.read_text().replace('"enabled": false', '"enabled": true'))
        sf.server.faults.transient_rate = 1.0  # every call: 503, retried with backoff
        daemon = children.start("daemon", "run", "--config", str(config))
        wait_for(lambda: "connector running" in daemon.stderr() or not daemon.running(), 60, "the daemon to start")
        time.sleep(5)  # the drain is in its backoff
        code, seconds = sigterm_and_wait([daemon], timeout=30)["daemon"]
        sf.server.faults.clear()
        assert code == 0 and seconds < BOUND, why(f"exit {code} after {seconds:.1f}s")
        assert store.outbox("sfdc", "Lead") == {"pending": 10}, why(f"outbox {store.outbox('sfdc', 'Lead')}")
        assert store.scalar("SELECT count(*) FROM outbox WHERE attempts > 0") == 0
        assert store.scalar("SELECT max(consecutive_failures) FROM source_health") in (0, None)
    finally:
        store.close()


def test_a_lost_database_connection_is_one_warning_and_nothing_lost(
    tmp_path: Path, pg_url: str, children: Procs, opened: Opened
) -> None:
    """pg_terminate_backend on the connection holding an object's lock, three times, mid-job."""
    why = explain_failure(children)
    sf = opened.salesforce(seed=14)
    leads = list(seed_leads(sf, 50, mixed=False))
    # The daemon's connections carry a name of their own: the test kills those and nothing else.
    config = write_config(tmp_path, f"{pg_url}&application_name=daemon-under-test", sf=sf)
    store = opened.reader(pg_url)
    daemon = children.start("daemon", "run", "--config", str(config))
    wait_for(lambda: len(store.records("sfdc", "Lead")) == 50, 90, "the first pull")
    # Kill the connection that holds the object's advisory lock, i.e. in the middle of a job: the
    # pull is slowed down by CRM latency so that there is always one to catch.
    sf.server.latency = 0.2
    holder = (
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() "
        "AND a.application_name = 'daemon-under-test'"
    )
    for lead in leads[:10]:
        reply_to_lead(sf, lead)
    for _ in range(3):
        pid = wait_for(lambda: store.scalar(holder), 30, "a job holding its object lock")
        store.rows("SELECT pg_terminate_backend(:pid)", pid=pid)
        time.sleep(2.5)  # the job's rerun finishes before the next kill
    sf.server.latency = 0.0
    wait_for(
        lambda: all(store.records("sfdc", "Lead")[lead][0] == "Working" for lead in leads[:10]), 60, "the replies"
    )
    wait_for(lambda: store.outbox("sfdc", "Lead").get("done") == 10, 60, "the write-backs")
    assert daemon.running(), why("the daemon died")
    code, _ = sigterm_and_wait([daemon])["daemon"]
    assert code == 0, why(f"exit {code}")
    log = daemon.stderr()
    assert "Traceback" not in log and " job failed" not in log, why("a traceback")
    assert "database connection was lost" in log, why("no warning")
    assert {sf.record("Lead", lead)["Status"] for lead in leads[:10]} == {WORKING_LEAD}


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
