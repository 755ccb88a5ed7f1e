"""What the settle window costs a HubSpot pull: API calls and records re-read per cycle.

    python bench/bench_hubspot_settle.py [--contacts 100000] [--changes 100] [--interval 60] [--cycles 10]

The sandbox holds --contacts contacts modified over the past months (the store's size does not matter
to the source, which only searches from its cursor). Each cycle, --changes of them are edited at
instants spread over the --interval seconds since the last pull, with the search index 1 s behind;
then the HubSpot source pulls from its cursor to the sandbox's clock, as the engine would. The same
run is made with the default settle window (2 minutes) and with a settle no longer than the 5 s
lookback (the pull before the settle window), and the calls and records of each cycle are counted
from the sandbox's call log and the pages the source yields.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.config import HubSpotSource, load_config
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sources.base import Cursor
from connector.sources.hubspot import HubSpot
from tests.hubspot_support import SandboxClock, contacts, write_config

T0 = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


def run(sandbox: HubSpotSandbox, folder: Path, settle: str, args: argparse.Namespace) -> list[tuple[int, int, int]]:
    clock = SandboxClock(T0)
    sandbox.reset()
    sandbox.clock = clock
    sandbox.rate_limit, sandbox.search_rate_per_second = 0, 0
    ids: list[str] = []
    rng = random.Random(1)
    for month in range(6):  # spread over six months, 30 days apart
        batch = contacts(args.contacts // 6, hs_lead_status="NEW")
        ids += sandbox.seed("contacts", batch, modified_at=T0 - timedelta(days=30 * (6 - month)))
    sandbox.set_search_lag(1.0)
    path = write_config(folder, sandbox, f'"sqlite:///{folder}/unused.db"', source=f"lookback: 5s\nsettle: {settle}")
    settings = load_config(path).sources["hubspot"]
    assert isinstance(settings, HubSpotSource)
    source = HubSpot("hubspot", settings, searches_per_second=0)
    cursor = Cursor()
    rows: list[tuple[int, int, int]] = []
    try:
        for cycle in range(args.cycles + 1):
            if cycle:
                step = args.interval / args.changes
                for record_id in rng.sample(ids, args.changes):
                    clock.advance(seconds=step)
                    sandbox.edit_as_person("contacts", record_id, hs_lead_status=rng.choice(["OPEN", "CONNECTED"]))
            sandbox.server.reset_calls()
            read = 0
            for page in source.pull("contacts", cursor, until=clock.now):
                read += len(page.records)
                if cursor.modified_at is None or _order(page.cursor) > _order(cursor):  # never back
                    cursor = page.cursor
            calls = len(sandbox.server.calls())
            if cycle:  # the first is the initial sync
                rows.append((calls, read, read - args.changes))
    finally:
        source.close()
    return rows


def _order(cursor: Cursor) -> tuple[datetime, int]:
    assert cursor.modified_at is not None
    return cursor.modified_at, int(cursor.last_id or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between pulls")
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    with HubSpotSandbox() as sandbox, tempfile.TemporaryDirectory() as folder:
        for label, settle in (("settle 2 min (default)", "2m"), ("settle 5 s (= lookback)", "5s")):
            rows = run(sandbox, Path(folder), settle, args)
            calls = sum(r[0] for r in rows) / len(rows)
            read = sum(r[1] for r in rows) / len(rows)
            again = sum(r[2] for r in rows) / len(rows)
            print(
                f"{label:26} {args.contacts} contacts, {args.changes} changes per {args.interval:.0f} s cycle: "
                f"{calls:.1f} API calls, {read:.0f} records read, {again:.0f} re-read per cycle (mean of {len(rows)})"
            )


if __name__ == "__main__":
    main()
