"""The connector's initial sync against the bare client library, on the same sandbox, in one run.

    python bench/compare.py [--crm salesforce|hubspot|both] [--leads 200000] [--sf-latency 0.05]
                            [--contacts 20000] [--hs-latency 0.02] [--rate-limit 100] [--rate-window 10]
                            [--search-rate 5] [--db sqlite|postgresql]

Salesforce: the sandbox (in a process of its own, --sf-latency seconds added to every call) holds
--leads leads. The bare client is simple-salesforce's `query_all_iter` on the very SOQL the connector
sends (same columns, same ORDER BY, queryAll), counting the rows; the connector is `Engine.pull`
into a new store. HubSpot: --contacts contacts, HubSpot's limits on (--rate-limit calls per rolling
--rate-window seconds, --search-rate searches a second). The bare client is hubspot-api-client's
`basic_api.get_page` paging the same properties 100 at a time, with the client's own urllib3 retry
on 429 (HubSpot sends no Retry-After: a backoff), once building the client's model objects and once
taking the raw JSON (the ratio is against the latter, the faster); the connector is `Engine.pull`
(search pages of 200).

Each side runs in a fresh process of its own, so its CPU time and peak RSS are its alone (the sandbox's
work is not counted). Prints, per side: wall and CPU seconds, records/s, API calls per record, peak
RSS, and the connector's ratios to the bare client. Targets: Salesforce <= 1.3x wall and <= 4x CPU;
HubSpot <= 1.2x wall; peak RSS <= 150 MB. The defaults take about two minutes on a quiet machine;
--leads 800000 is the memory run (about five). PostgreSQL (--db postgresql): $CONNECTOR_BENCH_PG,
default the database bench_perf (create it first), in a schema made for the run and dropped after.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PG = os.environ.get("CONNECTOR_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/bench_perf")
Result = dict[str, Any]


def _measure(work: Callable[[], int]) -> Result:
    """Wall, CPU and peak RSS of `work` (which returns the records it read), in this process."""
    started, cpu = time.perf_counter(), time.process_time()
    records = work()
    return {
        "records": records,
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _in_child(function: Callable[..., Result], *args: Any) -> Result:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# --- databases -------------------------------------------------------------------------------------
class Database:
    """A store URL for one run: SQLite in a temporary folder, or a PostgreSQL schema dropped afterwards."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder, self.schema = kind, folder, f"bench_{uuid.uuid4().hex[:8]}"

    def url(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder}/{name}.db"
        self._admin(f"CREATE SCHEMA {self.schema}_{name}")
        return f"{PG}?options=-csearch_path%3D{self.schema}_{name}"

    def drop(self, name: str) -> None:
        if self.kind == "postgresql":
            self._admin(f"DROP SCHEMA IF EXISTS {self.schema}_{name} CASCADE")

    @staticmethod
    def _admin(sql: str) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(PG)
        with engine.begin() as connection:
            connection.execute(text(sql))
        engine.dispose()


# --- Salesforce ------------------------------------------------------------------------------------
def sf_config(folder: Path, info: dict[str, str], database: str) -> Path:
    source = {
        "type": "salesforce", "instance_url": info["url"], "ca_bundle": info["ca"],
        "auth": {"method": "client_credentials", "login_url": info["url"], "client_id": info["client_id"],
                 "client_secret": info["client_secret"]},
        "objects": {"Lead": {"status_field": "Status", "mapping": str(ROOT / "mappings/salesforce-lead.yaml")}},
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps({"database": database, "sources": {"sfdc": source}}))
    return path


def sf_bare(config_path: Path) -> Result:
    """simple-salesforce alone: `query_all_iter` over the connector's own SOQL, on a session of its own."""
    import requests
    from simple_salesforce.api import Salesforce as SimpleSalesforce

    from connector.config import SalesforceSource, load_config
    from connector.sources import salesforce_soql as soql
    from connector.sources.base import Cursor
    from connector.sources.salesforce import Salesforce

    config = load_config(config_path)
    settings = config.sources["sfdc"]
    assert isinstance(settings, SalesforceSource)
    # The connector's source logs in (OAuth is not what is compared) and writes the SOQL; then it is left alone.
    source = Salesforce("sfdc", settings)
    login = source._connected()
    until = datetime.now(UTC)
    query = source._spec("Lead").query(soql.Window(Cursor(), until, settings.lookback).where(), "SystemModstamp, Id")
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides the sandbox's CA
    session.verify = str(settings.ca_bundle)
    client = SimpleSalesforce(instance_url=settings.instance_url, session_id=login.session_id, session=session)
    source.close()
    return _measure(lambda: sum(1 for _ in client.query_all_iter(query, include_deleted=True)))


def sf_connector(config_path: Path) -> Result:
    from connector.config import SalesforceSource, load_config
    from connector.engine import Engine
    from connector.sources.salesforce import Salesforce
    from connector.store.db import open_store

    config = load_config(config_path)
    settings = config.sources["sfdc"]
    assert isinstance(settings, SalesforceSource)
    from connector.heap import freeze_startup_objects

    source = Salesforce("sfdc", settings)
    store = open_store(config.database_url)
    engine = Engine(config, store, {"sfdc": source})
    freeze_startup_objects()  # as `connector sync` and `run` do once their engine has its sources
    try:
        return _measure(lambda: engine.pull(engine.synced("sfdc", "Lead"), datetime.now(UTC)).records)
    finally:
        source.close()
        store.close()


def salesforce(args: argparse.Namespace, database: Database, folder: Path) -> tuple[Result, Result]:
    from bench_salesforce import Remote, data_calls

    print(f"Salesforce: {args.leads:,} leads, {args.sf_latency * 1000:.0f} ms per call; store {database.kind}")
    remote = Remote(args.leads, args.sf_latency)
    try:
        url = database.url("sf")
        config = sf_config(folder, remote.info, url)
        remote.ask("reset")
        bare = _in_child(sf_bare, config)
        bare["calls"] = data_calls(remote.ask("calls"))
        remote.ask("reset")
        connector = _in_child(sf_connector, config)
        connector["calls"] = data_calls(remote.ask("calls"))
        database.drop("sf")
    finally:
        remote.stop()
    return bare, connector


# --- HubSpot ---------------------------------------------------------------------------------------
def hs_bare(config_path: Path, raw: bool) -> Result:
    """hubspot-api-client alone: list pages of 100 with the connector's properties, the client's retry on 429.

    `raw`: the answer's JSON as it comes (`_preload_content=False`, as the connector reads it), not the
    client's model objects, whose building costs more than the HTTP.
    """
    import hubspot
    from urllib3.util.retry import Retry

    from connector.config import HubSpotSource, load_config
    from connector.sources.hubspot import LIST_PAGE, Stream

    config = load_config(config_path)
    settings = config.sources["hubspot"]
    assert isinstance(settings, HubSpotSource)
    stream = Stream.of("hubspot", "contacts", settings.objects["contacts"])
    retry = Retry(total=50, status_forcelist=(429,), backoff_factor=0.5, backoff_max=10)
    client = hubspot.HubSpot(
        access_token=settings.auth.access_token.get_secret_value(), host=settings.base_url.rstrip("/"), retry=retry
    )
    api = client.crm.contacts.basic_api

    def read() -> int:
        count, after = 0, None
        while True:
            if raw:
                response = api.get_page(
                    limit=LIST_PAGE, after=after, properties=stream.properties, _preload_content=False
                )
                answer = json.loads(response.data)
                count += len(answer.get("results") or [])
                after = ((answer.get("paging") or {}).get("next") or {}).get("after")
            else:
                page = api.get_page(limit=LIST_PAGE, after=after, properties=stream.properties)
                count += len(page.results)
                after = page.paging.next.after if page.paging and page.paging.next else None
            if not after:
                return count

    return _measure(read)


def hs_connector(config_path: Path, search_rate: int) -> Result:
    from bench_hubspot import T0

    from tests.hubspot_support import open_connector

    with open_connector(config_path, searches_per_second=search_rate) as hub:
        synced = hub.synced()
        return _measure(lambda: hub.engine.pull(synced, T0 + timedelta(minutes=1)).records)


def hubspot_run(args: argparse.Namespace, database: Database, folder: Path) -> tuple[Result, Result]:
    from bench_hubspot import RemoteSandbox

    from tests.hubspot_support import write_config

    scale = 10.0 / args.rate_window
    search_rate = max(1, round(args.search_rate * scale))
    print(
        f"HubSpot: {args.contacts:,} contacts, {args.hs_latency * 1000:.0f} ms per call, {args.rate_limit} calls per "
        f"{args.rate_window:g} s rolling, {search_rate} searches/s; store {database.kind}"
    )
    sandbox = RemoteSandbox(
        contacts=args.contacts,
        latency=args.hs_latency,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        search_rate_per_second=search_rate,
    )
    try:
        url = database.url("hs")
        config = write_config(folder, sandbox, f'"{url}"')
        runs = []
        for raw in (False, True):
            before = len(sandbox.stats()["calls"])
            bare = _in_child(hs_bare, config, raw)
            stats = sandbox.stats()
            bare["calls"], bare["429s"] = len(stats["calls"]) - before, _limited(stats["calls"][before:])
            runs.append(bare)
            # Out of the rolling window this run used, so the next starts with the whole allowance.
            time.sleep(args.rate_window)
        models, bare = runs
        print(
            f"  bare client, its model objects: {models['records']:,} records; wall {models['wall']:.2f} s, "
            f"CPU {models['cpu']:.2f} s; {models['calls']} API calls, {models['429s']} answered 429 "
            "(the comparison below is against the raw JSON, the stricter)"
        )
        before = len(sandbox.stats()["calls"])
        connector = _in_child(hs_connector, config, search_rate)
        stats = sandbox.stats()
        connector["calls"], connector["429s"] = len(stats["calls"]) - before, _limited(stats["calls"][before:])
        database.drop("hs")
    finally:
        sandbox.stop()
    return bare, connector


def _limited(calls: list[tuple[str, str, int, float]]) -> int:
    return sum(1 for call in calls if call[2] == 429)


# --- report ----------------------------------------------------------------------------------------
def report(name: str, bare: Result, connector: Result, wall_target: float, cpu_target: float | None) -> bool:
    for label, run in (("bare client", bare), ("connector  ", connector)):
        records = max(1, run["records"])
        extra = f", {run['429s']} answered 429" if "429s" in run else ""
        print(
            f"  {label}: {run['records']:,} records; wall {run['wall']:.2f} s "
            f"({records / run['wall']:,.0f} records/s), "
            f"CPU {run['cpu']:.2f} s; {run['calls']} API calls ({run['calls'] / records:.5f} per record{extra}); "
            f"peak RSS {run['rss']:.0f} MB"
        )
    wall = connector["wall"] / bare["wall"]
    cpu = connector["cpu"] / max(1e-9, bare["cpu"])
    ok = wall <= wall_target and (cpu_target is None or cpu <= cpu_target) and connector["rss"] <= 150
    ok = ok and connector["records"] == bare["records"]
    cpu_goal = f" (target <= {cpu_target:g}x)" if cpu_target else ""
    print(
        f"  {name} connector / bare: wall {wall:.2f}x (target <= {wall_target:g}x), CPU {cpu:.2f}x{cpu_goal}; "
        f"peak RSS {connector['rss']:.0f} MB (target <= 150 MB): {'met' if ok else 'MISSED'}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crm", choices=["salesforce", "hubspot", "both"], default="both")
    parser.add_argument("--leads", type=int, default=200_000, help="Salesforce leads (default 200,000)")
    parser.add_argument("--sf-latency", type=float, default=0.05, help="seconds per Salesforce call (default 0.05)")
    parser.add_argument("--contacts", type=int, default=20_000, help="HubSpot contacts (default 20,000)")
    parser.add_argument("--hs-latency", type=float, default=0.02, help="seconds per HubSpot call (default 0.02)")
    parser.add_argument("--rate-limit", type=int, default=100, help="HubSpot calls per rolling window (default 100)")
    parser.add_argument("--rate-window", type=float, default=10.0, help="its seconds (default 10, HubSpot's)")
    parser.add_argument("--search-rate", type=float, default=5.0, help="searches a second at a 10 s window")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite", help="the connector's store")
    args = parser.parse_args()
    ok = True
    print(f"load average at the start: {', '.join(f'{n:.2f}' for n in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as name:
        folder = Path(name)
        database = Database(args.db, folder)
        if args.crm in ("salesforce", "both"):
            (folder / "sf").mkdir()
            ok = report("Salesforce", *salesforce(args, database, folder / "sf"), 1.3, 4.0) and ok
        if args.crm in ("hubspot", "both"):
            (folder / "hs").mkdir()
            ok = report("HubSpot", *hubspot_run(args, database, folder / "hs"), 1.2, None) and ok
    print(f"load average at the end: {', '.join(f'{n:.2f}' for n in os.getloadavg())}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
