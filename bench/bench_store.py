"""Store benchmark: apply status reads to a large store, on SQLite and PostgreSQL.

    python bench/bench_store.py [--records 1000000] [--reads 100000] [--changed 0.1] [--db sqlite|postgresql|both]
        [--profile FILE]

PostgreSQL: $CONNECTOR_BENCH_PG (default the database bench_perf on 127.0.0.1; create it first), in a
schema made for the run and dropped after it. About two minutes at the default sizes.

Seeds a store of --records records (bulk, outside the measured part), then applies --reads status
reads in pages of 2,000 (Salesforce's page size) through the real engine, a share --changed of them
with a new status. Prints records/s and peak RSS, and the RSS growth during the measured part, to
show memory does not grow with the size of the store.

On SQLite it then prints the floor: bare `sqlite3`, with the store's settings, doing the same pages'
database work and nothing else (the page's read, a stamp update for each unchanged record, a whole-row
update and a history row for each changed one, the cursor, one commit a page) on the same store, with
newer stamps so that nothing is skipped; and the connector's time as a ratio of it. The bare run
checkpoints as SQLite does by itself, on the committing thread; the connector checkpoints on a thread
of its own (`connector/store/checkpoint.py`), which is why it can come close to it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from connector.config import load_config
from connector.engine import Engine
from connector.mapping import StageMapping
from connector.record_writes import next_timer_at
from connector.rules import RecordState
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store.bulk import RECORD_COLUMNS, sqlite_time
from connector.store.db import open_store
from connector.store.repo import ROW_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
# A database of the benchmarks' own (each run works in a schema it creates and drops), never the tests'.
PG = os.environ.get("CONNECTOR_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/bench_perf")
STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
STAGES = ["New", "Working", "Converted", "Unresponsive"]
PAGE = 2000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_config(folder: Path, url: str) -> Path:
    config = folder / "config.yaml"
    config.write_text(
        f"database: {url}\n"
        "sources:\n  sfdc:\n    type: salesforce\n    auth: {method: token, access_token: x, instance_url: https://x}\n"
        f"    objects:\n      Lead: {{status_field: Status, mapping: {ROOT / 'mappings/salesforce-lead.yaml'}}}\n"
    )
    return config


def seed(url: str, count: int, at: datetime, mapping: StageMapping) -> None:
    """Bulk-load records straight into the table (the measured part goes through the engine).

    The rows are what the connector itself would have written: each with its stage's timer.
    """
    engine = create_engine(url)
    timers = [next_timer_at(RecordState(stage=stage, stage_entered_at=at), mapping) for stage in STAGES]
    rows = [
        ("sfdc", "Lead", f"00Q{i:015d}", STAGES[i % 4], "external", STATUSES[i % 4], at, timers[i % 4], False, False,
         at)
        for i in range(count)
    ]
    columns = (
        "source, object, external_id, stage, set_by, remote_status, stage_entered_at, next_timer_at, deleted, "
        "converted, updated_at"
    )
    with engine.begin() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY records ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
        else:
            naive = [tuple(sqlite_time(v) if isinstance(v, datetime) else v for v in r) for r in rows]
            cursor.executemany(f"INSERT INTO records ({columns}) VALUES ({', '.join('?' * len(rows[0]))})", naive)
    engine.dispose()


def run(url: str, records: int, reads: int, changed: float, profile: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(write_config(Path(folder), url))
        store = open_store(url)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        started = time.perf_counter()
        seed(url, records, t0, config.object("sfdc", "Lead").mapping)
        if store.dialect == "postgresql":
            with store.engine.begin() as connection:
                connection.execute(text("ANALYZE records"))
        else:
            # The seed's one transaction left a WAL the size of the table: start from an empty one, as a
            # store that has been running does.
            with store.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"  seeded {records:,} records in {time.perf_counter() - started:.1f}s")
        engine = Engine(config, store, {})
        synced = engine.synced("sfdc", "Lead")
        rng = random.Random(7)
        chosen = rng.sample(range(records), reads)
        # The pages are built first: making RemoteRecords is the source's work, measured in its benchmarks.
        pages = []
        for start in range(0, reads, PAGE):
            page = []
            for offset, index in enumerate(chosen[start : start + PAGE]):
                status = STATUSES[index % 4]
                if rng.random() < changed:
                    status = STATUSES[(index + 1) % 4]
                at = t0 + timedelta(hours=1, milliseconds=start + offset)
                page.append(RemoteRecord(f"00Q{index:015d}", status, at))
            pages.append(Page(page, Cursor(page[-1].modified_at, page[-1].id)))
        rss_before = current_rss_mb()
        rss_high = rss_before
        wal = f"{url.removeprefix('sqlite:///')}-wal" if store.dialect == "sqlite" else None
        wal_high = 0
        moved = 0
        profiler = cProfile.Profile() if profile else None
        started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        if profiler is not None:
            profiler.enable()
        for page in pages:
            moved += engine.apply_page(synced, page, t0).transitions
            rss_high = max(rss_high, current_rss_mb())
            if wal is not None:
                wal_high = max(wal_high, os.path.getsize(wal))
        if profiler is not None:
            profiler.disable()
        elapsed, done = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
        if profiler is not None and profile is not None:
            # Wall-clock times per function (a database call's time includes the server's work on it).
            path = f"{profile}.{store.dialect}"
            profiler.dump_stats(path)
            print(f"  profile (wall clock, profiler overhead included) in {path}")
        user, system = done.ru_utime - usage.ru_utime, done.ru_stime - usage.ru_stime
        print(
            f"  applied {reads:,} reads ({moved:,} moved) in {elapsed:.2f}s: {reads / elapsed:,.0f} records/s "
            f"(CPU of this process {user + system:.2f}s, {system:.2f}s of it in the kernel: "
            f"{reads / (user + system):,.0f} records per CPU second); load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"  RSS while applying: {rss_before:.0f} MB at the start, at most {rss_high:.0f} MB "
            f"(process peak, seeding included: {rss_mb():.0f} MB)"
        )
        if wal is not None:
            print(f"  WAL file at most {wal_high / 2**20:.0f} MB while applying")
        store.close()
        if store.dialect == "sqlite":
            floor = bare_sqlite(url.removeprefix("sqlite:///"), pages, t0 + timedelta(hours=2))
            print(
                f"  bare sqlite3, the same database work: {floor:.2f}s, {reads / floor:,.0f} records/s; "
                f"the connector takes {elapsed / floor:.2f}x"
            )


def bare_sqlite(path: str, pages: list[Page], at: datetime) -> float:
    """Seconds for bare sqlite3 to do the pages' database work (see the module's text)."""
    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-16384", "wal_autocheckpoint=10000"):
        connection.execute(f"PRAGMA {pragma}")
    select = (
        f"SELECT {', '.join(ROW_COLUMNS)} FROM records WHERE source = 'sfdc' AND object = 'Lead' AND external_id IN "
    )
    whole = f"UPDATE records SET {', '.join(c + ' = ?' for c in RECORD_COLUMNS)} WHERE id = ?"
    history = (
        "INSERT INTO transitions (record_id, at, from_stage, to_stage, cause, detail, suppressed) "
        "VALUES (?, ?, ?, ?, 'external', 'status', 0)"
    )
    started = time.perf_counter()
    for number, page in enumerate(pages):
        stamp = sqlite_time(at + timedelta(seconds=number))
        connection.execute("BEGIN")
        ids = sorted(r.id for r in page.records)
        rows = []
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            rows += connection.execute(f"{select}({', '.join('?' * len(chunk))})", chunk).fetchall()
        by_id = {row[1]: row for row in rows}
        # The engine has applied these pages already: the records it moved are those read with another
        # status than the one seeded.
        moved = [(r, by_id[r.id]) for r in page.records if r.status != STATUSES[int(r.id[3:]) % 4]]
        moved_ids = {r.id for r, _ in moved}
        connection.executemany(
            "UPDATE records SET remote_modified_at = ?, updated_at = ? WHERE id = ?",
            sorted((stamp, stamp, by_id[i][0]) for i in ids if i not in moved_ids),
        )
        # The whole row, as the engine writes a moved record: the stored values, the new status and stamps.
        values: list[tuple[Any, ...]] = [
            (*(r.status if c == "remote_status" else stamp if c in ("remote_modified_at", "updated_at")
               else row[ROW_COLUMNS.index(c)] for c in RECORD_COLUMNS), row[0])
            for r, row in moved
        ]
        values.sort(key=lambda v: v[-1])
        connection.executemany(whole, values)
        connection.executemany(history, [(row[0], stamp, row[2], row[2]) for _, row in moved])
        connection.execute(
            "UPDATE cursors SET modified_at = ?, last_id = ?, updated_at = ? "
            "WHERE source = 'sfdc' AND object = 'Lead'",
            (stamp, page.cursor.last_id if page.cursor else None, stamp),
        )
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the store (default 1,000,000)")
    parser.add_argument("--reads", type=int, default=100_000, help="status reads applied (default 100,000)")
    parser.add_argument("--changed", type=float, default=0.1, help="share of reads with a new status (default 0.1)")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the measured part to FILE.<dialect>")
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            print(f"SQLite, store of {args.records:,}:")
            run(f"sqlite:///{folder}/bench.db", args.records, args.reads, args.changed, args.profile)
    if args.db in ("postgresql", "both"):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG)
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            print(f"PostgreSQL, store of {args.records:,}:")
            run(f"{PG}?options=-csearch_path%3D{schema}", args.records, args.reads, args.changed, args.profile)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
