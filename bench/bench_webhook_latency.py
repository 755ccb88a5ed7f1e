"""From a change in the CRM to the connector's write-back: with webhooks, and with the poll alone.

    python bench/bench_webhook_latency.py [--samples 8] [--sync-every 60] [--writeback-every 10]
                                          [--sf-latency 0.05] [--hs-latency 0.02] [--db sqlite|postgresql]

Both sandboxes run in this process with --sf-latency / --hs-latency seconds added to every call, each
holding 200 records. `connector run` runs as a child process on the schedule given (the defaults are the
design's: a pull every 60 s, a write-back run every 10 s), with a criteria trigger in each mapping (a
lead score at or over 50 moves a new Salesforce lead to Working; a HubSpot score over 40 moves a new
contact to Connected). A sample is a person raising one record's score; its latency is the time until
the sandbox holds the status the connector wrote back.

Twice: once with webhooks (the HubSpot sandbox sends signed webhooks, the Salesforce sandbox Outbound
Messages, to the daemon's /webhooks/<source>), once without. Without, the edits are spread over two poll
intervals, so that they fall at every phase of the poll; the run takes about three minutes at the
defaults. Prints, per CRM and mode: samples, median, 90th percentile and worst latency.

PostgreSQL (--db postgresql): $CONNECTOR_BENCH_PG, default the database bench_perf (create it first),
in a schema made for the run and dropped after; never the tests' database.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Database

from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox

RECORDS = 200
APP_SECRET = "bench-app-secret"
LEAD_NEW, LEAD_WORKING = "Open - Not Contacted", "Working - Contacted"

SF_MAPPING = """\
stages:
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress}
  - {name: Converted,    category: succeeded}
  - {name: Unresponsive, category: not_succeeded}
statuses:
  Open - Not Contacted: New
  Working - Contacted: Working
  Closed - Converted: Converted
  Closed - Not Converted: Unresponsive
triggers:
  - {name: hot, on: {field: Lead_Score__c, gte: 50}, from: [New], to: Working}
"""

HS_MAPPING = """\
stages:
  - {name: New,       category: in_progress}
  - {name: Open,      category: in_progress}
  - {name: Connected, category: in_progress}
  - {name: Bad Timing, category: not_succeeded}
statuses:
  NEW: New
  OPEN: Open
  CONNECTED: Connected
  BAD_TIMING: Bad Timing
triggers:
  - {name: hot, on: {field: hubspotscore, gt: 40}, from: [New, Open], to: Connected}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def write_config(
    folder: Path, database: str, sf: SalesforceSandbox, hs: HubSpotSandbox, port: int, args: argparse.Namespace,
    *, webhooks: bool,
) -> Path:
    (folder / "sf.yaml").write_text(SF_MAPPING)
    (folder / "hs.yaml").write_text(HS_MAPPING)
    sfdc: dict[str, Any] = {
        "type": "salesforce",
        "instance_url": sf.url,
        "auth": {"method": "client_credentials", "login_url": sf.url, "client_id": sf.client_id,
                 "client_secret": sf.client_secret},
        "ca_bundle": str(sf.ca_pem),
        "objects": {"Lead": {"status_field": "Status", "mapping": "sf.yaml", "activity": {"enabled": False}}},
    }
    hubspot: dict[str, Any] = {
        "type": "hubspot",
        "base_url": hs.url,
        "auth": {"method": "token", "access_token": hs.token},
        "objects": {"contacts": {"status_field": "hs_lead_status", "mapping": "hs.yaml",
                                 "activity": {"enabled": False}}},
    }
    if webhooks:
        sfdc["webhooks"] = {"organization_id": sf.org_id}
        hubspot["webhooks"] = {"app_secret": APP_SECRET}
    config = {
        "database": database,
        "sources": {"sfdc": sfdc, "hubspot": hubspot},
        "schedule": {"sync_every": f"{args.sync_every}s", "writeback_every": f"{args.writeback_every}s",
                     "timers_every": "15m", "reconcile_every": "24h"},
        "server": {"listen": f"127.0.0.1:{port}"},
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def first_sync_done(database: str) -> bool:
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM cursors WHERE kind = 'records'")).scalar()
    except Exception:  # the schema is not there yet
        return False
    finally:
        engine.dispose()
    return bool(count and count >= 2)


def run_mode(args: argparse.Namespace, folder: Path, db: Database, *, webhooks: bool) -> dict[str, list[float]]:
    name = "hooks" if webhooks else "poll"
    sf = SalesforceSandbox(seed=3, latency=args.sf_latency)
    hs = HubSpotSandbox(seed=3, latency=args.hs_latency)
    sf.start()
    hs.start()
    run_folder = folder / name
    run_folder.mkdir()
    database = db.url(name)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        leads = sf.seed("Lead", [{"LastName": f"L{i}", "Company": "Acme", "Status": LEAD_NEW, "Lead_Score__c": 10}
                                 for i in range(RECORDS)])
        contacts = hs.seed("contacts", [{"email": f"c{i}@example.com", "hs_lead_status": "NEW"}
                                        for i in range(RECORDS)])
        port = free_port()
        config = write_config(run_folder, database, sf, hs, port, args, webhooks=webhooks)
        if webhooks:
            base = f"http://127.0.0.1:{port}/webhooks"
            sf.add_outbound_message("Lead", f"{base}/sfdc", ("Id", "Lead_Score__c"))
            hs.subscribe_webhooks(f"{base}/hubspot", APP_SECRET, [("contact.propertyChange", "hubspotscore"),
                                                                  ("contact.propertyChange", "hs_lead_status")])
        log = (run_folder / "daemon.log").open("wb")
        daemon = subprocess.Popen([sys.executable, "-m", "connector", "run", "--config", str(config)],
                                  stdout=log, stderr=log)
        wait_for(lambda: first_sync_done(database), 120, "the first sync")
        time.sleep(1.0)
        rng = random.Random(11)
        spread = 0.0 if webhooks else 2 * args.sync_every
        plan = sorted(rng.uniform(0, spread) for _ in range(args.samples))
        results: dict[str, list[float]] = {"Salesforce": [], "HubSpot": []}
        threads = []

        def sample(crm: str, record: str, delay: float) -> None:
            time.sleep(delay)
            started = time.monotonic()
            if crm == "Salesforce":
                sf.edit_as_person("Lead", record, Lead_Score__c=80)
                done = lambda: sf.record("Lead", record)["Status"] == LEAD_WORKING  # noqa: E731
            else:
                hs.recalculate("contacts", record, hubspotscore="80")  # HubSpot's scoring: read-only to people
                done = lambda: hs.record("contacts", record)["hs_lead_status"] == "CONNECTED"  # noqa: E731
            wait_for(done, args.sync_every * 3 + args.writeback_every * 2, f"{crm} {record}'s write-back")
            results[crm].append(time.monotonic() - started)

        for n, delay in enumerate(plan):
            # With webhooks, one change at a time (a second apart); without, all at once at spread offsets.
            offset = n * 1.5 if webhooks else delay
            for crm, ids in (("Salesforce", leads), ("HubSpot", contacts)):
                thread = threading.Thread(target=sample, args=(crm, ids[n], offset))
                thread.start()
                threads.append(thread)
        for thread in threads:
            thread.join()
        return results
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
        hs.stop()
        sf.stop()
        db.drop(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8, help="changes per CRM and mode (default 8)")
    parser.add_argument("--sync-every", type=int, default=60, help="the poll interval, seconds (default 60)")
    parser.add_argument("--writeback-every", type=int, default=10, help="the write-back interval (default 10)")
    parser.add_argument("--sf-latency", type=float, default=0.05, help="seconds per Salesforce call (default 0.05)")
    parser.add_argument("--hs-latency", type=float, default=0.02, help="seconds per HubSpot call (default 0.02)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite", help="the connector's store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        folder = Path(tmp)
        db = Database(args.db, folder)
        modes = {"webhooks": run_mode(args, folder, db, webhooks=True),
                 "poll only": run_mode(args, folder, db, webhooks=False)}
    print(f"change -> write-back, sync_every {args.sync_every}s, writeback_every {args.writeback_every}s, "
          f"latency SF {args.sf_latency}s HS {args.hs_latency}s per call, store {args.db}")
    print(f"{'mode':<10} {'crm':<11} {'n':>3} {'median s':>9} {'p90 s':>8} {'worst s':>8}")
    for mode, results in modes.items():
        for crm, values in results.items():
            values.sort()
            p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
            print(f"{mode:<10} {crm:<11} {len(values):>3} {statistics.median(values):>9.2f} {p90:>8.2f} "
                  f"{values[-1]:>8.2f}")


if __name__ == "__main__":
    main()
