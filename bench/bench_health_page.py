"""Health page benchmark: how long `/` takes to build over a store of many records and moves.

    python bench/bench_health_page.py [--records 20000] [--db URL]

Seeds --records records (one to three moves each, every 500th quarantined) into a fresh store (SQLite
in a temporary folder unless --db says otherwise), then builds the page three times with one funnel
cache, as the daemon does: the first build computes the funnel (every transition read), the next ones
reuse it while no move was written.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.config import load_config
from connector.engine import Engine
from connector.rules import Cause, RecordState, SetBy, Transition
from connector.store import repo
from connector.store.db import open_store
from connector.web.page import render_page
from connector.web.view import FunnelCache, page_data

MAPPING = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress}
  - {name: Won, category: succeeded}
statuses: {Open: New, Contacted: Working, Closed Won: Won}
"""
STAGES = ["New", "Working", "Won"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seed(store: object, count: int) -> None:
    for start in range(0, count, 2000):
        writes = []
        for i in range(start, min(count, start + 2000)):
            moves = [
                Transition(
                    T0 + timedelta(minutes=i % 997 + k),
                    STAGES[k - 1] if k else None,
                    STAGES[k],
                    Cause.EXTERNAL,
                    "seeded",
                )
                for k in range(i % 3 + 1)
            ]
            state = RecordState(
                stage=STAGES[i % 3],
                set_by=SetBy.EXTERNAL,
                remote_status="Open",
                stage_entered_at=T0,
                quarantined="Nurture" if i % 500 == 0 else None,
            )
            writes.append(repo.RecordWrite(external_id=f"R{i:07d}", record_id=None, state=state, transitions=moves))
        with store.transaction() as session:  # type: ignore[attr-defined]
            repo.save_records(session, "crm", "Lead", writes, T0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    url = args.db or f"sqlite:///{folder}/bench.db"
    (folder / "mapping.yaml").write_text(MAPPING, encoding="utf-8")
    (folder / "config.yaml").write_text(
        f'database: "{url}"\nsources:\n  crm:\n    type: salesforce\n    instance_url: https://acme.my.salesforce.com\n'
        "    auth: {method: token, access_token: offline}\n    objects:\n"
        "      Lead: {status_field: Status, mapping: mapping.yaml}\n",
        encoding="utf-8",
    )
    store = open_store(url)
    try:
        seed(store, args.records)
        engine = Engine(load_config(folder / "config.yaml", environ={}), store, {})
        cache = FunnelCache()
        for label in ("first (funnel computed)", "again (funnel cached)", "again (funnel cached)"):
            started = time.perf_counter()
            page = render_page(page_data(engine, T0, cache), T0)
            print(f"{args.records} records: {label}: {time.perf_counter() - started:.3f} s, {len(page)} bytes")
    finally:
        store.close()


if __name__ == "__main__":
    main()
