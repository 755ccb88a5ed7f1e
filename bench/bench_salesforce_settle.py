"""Salesforce settle window: what a pull re-reads, and API calls per activity pull.

    PYTHONPATH=. python bench/bench_salesforce_settle.py [--leads 5000] [--activities 200]

Through the real engine, source and client against the sandbox (tests.salesforce_support.World):

1. a bulk load of --leads leads stamped in one second, the first sync, then a sync 60 s later: the
   rows that second sync reads (the issue: 25,100 rows in 13 pages after a 5,000-record load; the
   settle window reads none once the load has settled);
2. --activities Tasks and Events, each on two leads (Shared Activities): the query calls of the
   cycle that reads them (one per activity object and one per relation object per page, plus the
   record pull and the write-back's conflict check).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.salesforce_support import World


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=5_000)
    parser.add_argument("--activities", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = World.open(Path(tmp))
        try:
            world.seed_leads(args.leads)
            start = time.perf_counter()
            first = world.cycle()
            took = time.perf_counter() - start
            world.clock.advance(60)
            world.sandbox.server.reset_calls()
            second = world.cycle()
            reads = [c for c in world.sandbox.server.calls() if "/queryAll" in c.path]
            print(f"bulk load of {args.leads} in one second: first sync pulled {first.pulled.records} in {took:.2f} s; "
                  f"a sync 60 s later pulled {second.pulled.records} ({len(reads)} queryAll call, "
                  f"{sum(c.records for c in reads)} rows)")

            leads = world.seed_leads(2 * args.activities)
            world.cycle()
            for i in range(args.activities):
                kind, kind_type = ("Task", "Call") if i % 2 else ("Event", "Meeting")
                world.sandbox.log_activity(kind, who=[leads[i], leads[-1 - i]], Subject="x", Type=kind_type)
            world.clock.advance(30)
            world.sandbox.server.reset_calls()
            outcome = world.cycle()
            queries = [c for c in world.sandbox.server.calls() if "/query" in c.path]
            print(f"{args.activities} activities on two people each: {outcome.events.new} events, "
                  f"{len(queries)} query calls in the cycle")
        finally:
            world.close()


if __name__ == "__main__":
    main()
