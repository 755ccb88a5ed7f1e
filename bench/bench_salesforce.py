"""Salesforce benchmark: initial sync and write-back through the real engine, source and client.

    python bench/bench_salesforce.py [--leads 200000] [--writes 20000] [--latency 0.05] [--naive N]

The sandbox runs in a child process, with --latency seconds added to every call, so the RSS printed
is the connector's alone. Steps:

1. an initial sync of --leads leads (seeded in bulk beforehand, outside the measured part);
2. a write-back of --writes stage changes (set in bulk through the engine, then drained: conflict
   check reads plus sObject Collections writes);
3. a naive loop on --naive other leads (default: a tenth of --writes, at most 1,000): the same
   simple-salesforce client, one `sf.Lead.update(id, {...})` PATCH per record, compared per record.

Prints records/s, API calls per record (from the sandbox's call log), peak RSS, and the RSS at each
quarter of the sync, to show memory is flat in the number of records. Targets: reads <= 1 call per
2,000 records; writes <= 1 call per 200 records plus the conflict-check reads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.config import SalesforceSource, load_config  # noqa: E402
from connector.engine import Engine, PageStats  # noqa: E402
from connector.sources.base import Cursor  # noqa: E402
from connector.sources.salesforce import Salesforce  # noqa: E402
from connector.store.db import open_store  # noqa: E402
from connector.writeback import Drain  # noqa: E402

SEED_BATCH = 5_000  # leads per SystemModstamp second when seeding
WORKING, LOST = "Working - Contacted", "Closed - Not Converted"


# --- the sandbox, in its own process ---------------------------------------------------------------
def serve_sandbox(pipe: Connection, leads: int, latency: float) -> None:
    from connector.sandbox.salesforce import SalesforceSandbox

    sandbox = SalesforceSandbox(latency=latency)
    start = datetime.now(UTC) - timedelta(hours=2)
    for n, first in enumerate(range(0, leads, SEED_BATCH)):
        rows = [{"LastName": f"Lead {i}", "Company": "Acme", "Email": f"lead{i}@example.com"}
                for i in range(first, min(leads, first + SEED_BATCH))]
        sandbox.seed("Lead", rows, modstamp=start + timedelta(seconds=n))
    sandbox.start()
    pipe.send({"url": sandbox.url, "ca": sandbox.ca_pem, "client_id": sandbox.client_id,
               "client_secret": sandbox.client_secret})
    while True:
        command = pipe.recv()
        if command == "calls":
            pipe.send(Counter((c.method, c.path.split("/")[4] if c.path.count("/") > 3 else c.path)
                              for c in sandbox.server.calls()))
        elif command == "reset":
            sandbox.server.reset_calls()
            pipe.send(None)
        elif command == "writes":
            pipe.send(len(sandbox.writes()))
        else:
            sandbox.stop()
            pipe.send(None)
            return


class Remote:
    def __init__(self, leads: int, latency: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=serve_sandbox, args=(child, leads, latency), daemon=True)
        self.process.start()
        self.info: dict[str, str] = self.pipe.recv()

    def ask(self, command: str) -> Any:
        self.pipe.send(command)
        return self.pipe.recv()

    def stop(self) -> None:
        self.ask("stop")
        self.process.join(10)


# --- measuring -------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory() -> tuple[float, float, float]:
    """(anonymous RSS MB, file-backed RSS MB, Python heap blocks in thousands), right now.

    File-backed RSS is the store's memory-mapped SQLite file and grows with the database; anonymous
    RSS includes SQLite's page cache (the store sets 128 MB). Python's blocks are the connector's objects.
    """
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else "0"
    return int(fields.get("RssAnon", 0)) / 1024, int(fields.get("RssFile", 0)) / 1024, sys.getallocatedblocks() / 1000


def write_config(folder: Path, info: dict[str, str]) -> Path:
    source = {
        "type": "salesforce", "instance_url": info["url"], "ca_bundle": info["ca"],
        "auth": {"method": "client_credentials", "login_url": info["url"], "client_id": info["client_id"],
                 "client_secret": info["client_secret"]},
        "objects": {"Lead": {"status_field": "Status", "mapping": str(ROOT / "mappings/salesforce-lead.yaml")}},
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps({"database": f"sqlite:///{folder}/bench.db", "sources": {"sfdc": source}}))
    return path


def data_calls(calls: Counter[tuple[str, str]]) -> int:
    return sum(n for (method, kind), n in calls.items() if not kind.startswith("/services/oauth2"))


def initial_sync(engine: Engine, remote: Remote, leads: int) -> dict[str, Any]:
    synced = engine.synced("sfdc", "Lead")
    marks: list[tuple[int, tuple[float, float, float]]] = []
    quarter = max(1, leads // 4)

    def progress(stats: PageStats) -> None:
        if not marks or stats.records // quarter > marks[-1][0] // quarter:
            marks.append((stats.records, memory()))

    remote.ask("reset")
    started = time.perf_counter()
    stats = engine.pull(synced, datetime.now(UTC), progress=progress)
    elapsed = time.perf_counter() - started
    calls = remote.ask("calls")
    return {"records": stats.records, "seconds": elapsed, "calls": data_calls(calls), "rss_marks": marks}


def source_alone(source: Salesforce, remote: Remote, leads: int) -> dict[str, Any]:
    """The same read without the store: the source's own speed and memory."""
    marks: list[tuple[int, tuple[float, float, float]]] = []
    quarter = max(1, leads // 4)
    read = 0
    remote.ask("reset")
    started = time.perf_counter()
    for page in source.pull("Lead", Cursor(), until=datetime.now(UTC)):
        read += len(page.records)
        if not marks or read // quarter > marks[-1][0] // quarter:
            marks.append((read, memory()))
    elapsed = time.perf_counter() - started
    return {"records": read, "seconds": elapsed, "calls": data_calls(remote.ask("calls")), "rss_marks": marks}


def write_back(engine: Engine, source: Salesforce, remote: Remote, ids: list[str]) -> dict[str, Any]:
    synced = engine.synced("sfdc", "Lead")
    now = datetime.now(UTC)
    engine.set_stages(synced, [(rid, "Working") for rid in ids], now)
    remote.ask("reset")
    drain = Drain(engine.store, source, engine.config.model.writeback)
    started = time.perf_counter()
    done = 0
    while True:
        stats = drain.run(synced, now)
        done += stats.done
        if stats.claimed == 0:
            break
    elapsed = time.perf_counter() - started
    calls = remote.ask("calls")
    patches = sum(n for (method, _), n in calls.items() if method == "PATCH")
    return {"records": done, "seconds": elapsed, "calls": data_calls(calls), "patches": patches,
            "reads": calls.get(("GET", "queryAll"), 0)}


def naive_loop(source: Salesforce, remote: Remote, ids: list[str]) -> dict[str, Any]:
    from simple_salesforce.api import SFType

    lead = cast(SFType, source._connected().Lead)  # the very client the source uses
    remote.ask("reset")
    started = time.perf_counter()
    for rid in ids:
        lead.update(rid, {"Status": LOST})
    elapsed = time.perf_counter() - started
    return {"records": len(ids), "seconds": elapsed, "calls": data_calls(remote.ask("calls"))}


def lead_ids(engine: Engine, count: int) -> list[str]:
    from sqlalchemy import select

    from connector.store.repo import RECORDS

    with engine.store.transaction() as session:
        rows = session.execute(select(RECORDS.c.external_id).order_by(RECORDS.c.id).limit(count))
        return [row.external_id for row in rows]


def _reads(label: str, run: dict[str, Any]) -> None:
    records, calls = run["records"], max(1, run["calls"])
    print(f"{label}: {records:,} records in {run['seconds']:.1f} s = {records / run['seconds']:,.0f} records/s; "
          f"{run['calls']} API calls = {run['calls'] / max(1, records):.5f} per record (1 per {records / calls:,.0f})")
    for n, (anon, file, blocks) in run["rss_marks"]:
        print(f"    after {n:>9,} records: RSS anon {anon:6.0f} MB, file {file:6.0f} MB; Python blocks {blocks:8,.0f}k")


def report(
    args: argparse.Namespace, sync: dict[str, Any], alone: dict[str, Any], back: dict[str, Any], naive: dict[str, Any]
) -> None:
    print(f"Salesforce sandbox, {args.latency * 1000:.0f} ms per call; {args.leads:,} leads, {args.writes:,} writes")
    _reads("initial sync (engine + SQLite store)", sync)
    _reads("the same read, source alone       ", alone)
    per_write = back["seconds"] / max(1, back["records"])
    print(f"write-back   : {back['records']:,} records in {back['seconds']:.1f} s = "
          f"{back['records'] / back['seconds']:,.0f} records/s; {back['calls']} API calls "
          f"({back['patches']} collection PATCHes = 1 per {back['records'] / max(1, back['patches']):.0f} records, "
          f"{back['reads']} conflict-check reads) = {back['calls'] / max(1, back['records']):.4f} per record")
    per_naive = naive["seconds"] / max(1, naive["records"])
    print(f"naive loop   : {naive['records']:,} records in {naive['seconds']:.1f} s = "
          f"{naive['records'] / naive['seconds']:,.0f} records/s; {naive['calls']} API calls = "
          f"{naive['calls'] / max(1, naive['records']):.2f} per record")
    print(f"per record   : batched {per_write * 1000:.2f} ms vs naive {per_naive * 1000:.2f} ms = "
          f"{per_naive / per_write:.1f}x faster; API calls {naive['calls'] / max(1, naive['records']):.2f} vs "
          f"{back['calls'] / max(1, back['records']):.4f} per record")
    print(f"peak RSS     : {peak_rss_mb():.0f} MB (the connector's process; the sandbox runs in its own)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--naive", type=int, default=None, help="records for the naive loop")
    args = parser.parse_args()
    naive_count = args.naive if args.naive is not None else min(1_000, max(100, args.writes // 10))
    if args.writes + naive_count > args.leads:
        parser.error("--writes plus the naive loop's records must not exceed --leads")
    remote = Remote(args.leads, args.latency)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sf-") as folder:
            config = load_config(write_config(Path(folder), remote.info))
            settings = config.sources["sfdc"]
            assert isinstance(settings, SalesforceSource)
            source = Salesforce("sfdc", settings)
            store = open_store(config.database_url)
            engine = Engine(config, store, {"sfdc": source})
            try:
                sync = initial_sync(engine, remote, args.leads)
                alone = source_alone(source, remote, args.leads)
                ids = lead_ids(engine, args.writes + naive_count)
                back = write_back(engine, source, remote, ids[: args.writes])
                naive = naive_loop(source, remote, ids[args.writes :])
            finally:
                source.close()
                store.close()
    finally:
        remote.stop()
    report(args, sync, alone, back, naive)


if __name__ == "__main__":
    main()
