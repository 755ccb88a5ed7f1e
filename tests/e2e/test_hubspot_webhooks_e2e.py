"""HubSpot webhooks through `connector run`: the sandbox's signed requests bring a change in seconds with a
60 s poll; tampered, replayed and malformed requests are refused and counted in /metrics."""

# ruff: noqa: F811  (the fixtures `children` and `opened` come from test_daemon)
from __future__ import annotations

import time
from pathlib import Path

from connector.sandbox.hubspot_webhooks import signed_headers
from tests.daemon_support import CONNECTED_CONTACT, NEW_CONTACT, Procs, wait_for, write_config
from tests.e2e.test_daemon import (  # noqa: F401  (fixtures)
    Opened,
    children,
    explain_failure,
    opened,
)
from tests.e2e.test_webhooks import BOUND, configure, free_port, metric, post, stage_of

APP_SECRET = "hubspot-app-client-secret-" + "z" * 12
MAX_AGE = 2.0  # seconds: short, so that the test can see a replay refused without waiting 5 minutes


def test_a_hubspot_webhook_brings_a_change_in_seconds_and_forgeries_are_refused(
    tmp_path: Path, children: Procs, opened: Opened
) -> None:
    hs = opened.hubspot(seed=31)
    contacts = hs.seed("contacts", [{"email": f"hook{i}@example.com", "hs_lead_status": NEW_CONTACT} for i in range(5)])
    port = free_port()
    database = f"sqlite:///{tmp_path / 'c.db'}"
    config = write_config(tmp_path, database, hs=hs)
    configure(config, port, hubspot={"app_secret": APP_SECRET, "max_age": f"{MAX_AGE:g}s"})
    endpoint = f"http://127.0.0.1:{port}/webhooks/hubspot"
    daemon = children.start("daemon", "run", "--config", str(config))
    reader = opened.reader(database)
    fail = explain_failure(children)
    wait_for(lambda: reader.cursor("hubspot", "contacts"), 60, fail("the first sync"))
    sender = hs.subscribe_webhooks(
        endpoint, APP_SECRET, [("contact.propertyChange", "hs_lead_status"), ("contact.creation", None)]
    )

    started = time.monotonic()
    hs.edit_as_person("contacts", contacts[0], hs_lead_status=CONNECTED_CONTACT)
    wait_for(lambda: stage_of(reader, "hubspot", contacts[0]) == "Connected", 10, fail("the change to reach the store"))
    took = time.monotonic() - started
    assert took < BOUND, fail(f"the change took {took:.2f}s with a 60 s poll")

    [new] = hs.seed("contacts", [{"email": "late@example.com", "hs_lead_status": NEW_CONTACT}])
    wait_for(lambda: stage_of(reader, "hubspot", new) == "New", 10, fail("the new contact to reach the store"))

    # A recorded request is genuine only as it was sent, and only for max_age.
    assert sender.wait_idle(10)
    genuine = sender.sent()[0]
    assert genuine.status == 200
    tampered = genuine.body.replace(CONNECTED_CONTACT.encode(), b"UNQUALIFIED")
    assert post(endpoint, tampered, dict(genuine.headers)) == 401
    time.sleep(MAX_AGE + 0.5)
    assert post(endpoint, genuine.body, dict(genuine.headers)) == 401
    body = b'[{"subscriptionType": "contact.creation"}]'
    assert post(endpoint, body, signed_headers(APP_SECRET, endpoint, body, str(time.time_ns() // 1_000_000))) == 400

    counts = {
        outcome: metric(port, "connector_webhook_requests_total", source="hubspot", outcome=outcome)
        for outcome in ("accepted", "signature", "replay", "malformed")
    }
    assert counts["accepted"] >= 2 and counts["signature"] == counts["replay"] == counts["malformed"] == 1, counts
    assert stage_of(reader, "hubspot", contacts[0]) == "Connected"  # the tampered copy changed nothing
    assert daemon.running(), fail("the daemon died")
    assert "Traceback" not in daemon.stderr(), daemon.stderr()
    assert APP_SECRET not in daemon.stderr(), "the app secret reached the log"
