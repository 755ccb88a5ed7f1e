"""Two `connector run` daemons on one PostgreSQL send every stage owner's notification exactly once.

Before the fix each key reached the webhook twice: every object's timers job ran a notify pass, and
two passes could claim the same rows. The receiver here counts deliveries per Idempotency-Key.
"""

# ruff: noqa: F811  (the fixtures `children` and `opened` come from test_daemon)
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_support import Procs, sigterm_and_wait, wait_for, write_config
from tests.e2e.test_daemon import (  # noqa: F401  (fixtures)
    Opened,
    children,
    explain_failure,
    opened,
    reply_to_lead,
    seed_leads,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Receiver:
    """A webhook endpoint on loopback that keeps every delivery's Idempotency-Key."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        lock = threading.Lock()
        keys = self.keys

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    keys.append(self.headers["Idempotency-Key"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.close()


def test_two_daemons_notify_each_stage_entry_once(
    tmp_path: Path, pg_url: str, children: Procs, opened: Opened, receiver: Receiver
) -> None:
    why = explain_failure(children)
    sf = opened.salesforce(seed=21)
    leads = list(seed_leads(sf, 30, mixed=False))
    config = write_config(tmp_path, pg_url, sf=sf)
    data = json.loads(config.read_text())
    data["notifications"] = {"webhook": receiver.url}
    config.write_text(json.dumps(data))
    mapping = tmp_path / "mappings" / "salesforce-lead.yaml"
    owned = 'category: in_progress, owner: "005-ana"}'  # Working has an owner: entering it is news
    mapping.write_text(mapping.read_text().replace("category: in_progress, remind_after: 10d}", owned))
    store = opened.reader(pg_url)
    daemons = [children.start(name, "run", "--config", str(config)) for name in ("daemon-a", "daemon-b")]
    wait_for(lambda: len(store.records("sfdc", "Lead")) == 30, 120, "the first pull")
    wait_for(lambda: store.cursor("sfdc", "Lead", "notify"), 60, "the first notify pass")
    for lead in leads[:12]:
        reply_to_lead(sf, lead)
    wait_for(lambda: len(set(receiver.keys)) >= 12, 90, "twelve notifications")
    time.sleep(6)  # three more timers rounds in each daemon: a second delivery would arrive by now
    assert all(d.running() for d in daemons), why("a daemon died")
    stopped = sigterm_and_wait(daemons)
    assert [code for code, _ in stopped.values()] == [0, 0], why(f"exit codes: {stopped}")
    counts = Counter(receiver.keys)
    assert len(counts) == 12 and set(counts.values()) == {1}, why(f"deliveries per key: {counts}")
    assert store.scalar("SELECT count(*) FROM notifications WHERE state = 'sent' AND attempts = 1") == 12
