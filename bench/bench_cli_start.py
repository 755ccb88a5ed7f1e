"""CLI start-up benchmark: `--help`, `status`, `status --json` and `explain` in fresh processes.

    python bench/bench_cli_start.py [--records 2000] [--runs 15] [--db sqlite|postgresql]

Builds a store of --records Salesforce leads (through the real engine, outside the measured part) in
a temporary folder, then runs each command --runs times as `python -m connector ...` in a new
interpreter, as a person would, and prints the median wall time and the median CPU seconds (user +
system of the child) per command, and the number of modules it imported. The machine's load average
is printed too: a shared machine's wall times are only comparable taken at the same moment.

PostgreSQL: $CONNECTOR_BENCH_PG (default the database bench_perfcli on 127.0.0.1; create it first), in
a schema made for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("CONNECTOR_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/bench_perfcli")
STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
PROBE = "import json,sys; from connector.cli import main\ntry: main(sys.argv[1:])\nexcept SystemExit: pass\n" \
        "print(len(sys.modules), file=sys.stderr)"


def build_store(folder: Path, url: str, records: int) -> Path:
    from connector.config import load_config
    from connector.engine import Engine
    from connector.sources.base import Cursor, Page, RemoteRecord
    from connector.store.db import open_store

    config = folder / "config.yaml"
    config.write_text(
        f'database: "{url}"\n'
        "sources:\n  sfdc:\n    type: salesforce\n    instance_url: https://acme.my.salesforce.com\n"
        "    auth: {method: token, access_token: not-a-secret}\n"
        f"    objects:\n      Lead: {{status_field: Status, mapping: {ROOT / 'mappings/salesforce-lead.yaml'}}}\n"
    )
    loaded = load_config(config)
    store = open_store(loaded.database_url)
    engine = Engine(loaded, store, {})
    synced = engine.synced("sfdc", "Lead")
    start = datetime(2026, 3, 2, tzinfo=UTC)
    for first in range(0, records, 2000):
        page = [RemoteRecord(f"L{i:06d}", STATUSES[i % len(STATUSES)], start + timedelta(seconds=i))
                for i in range(first, min(records, first + 2000))]
        engine.apply_page(synced, Page(page, Cursor(page[-1].modified_at, page[-1].id)), start)
    store.close()
    return config


def run(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh `python -m connector ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "connector", *args], cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def module_count(args: list[str], cwd: Path) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return int(done.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        if options.db == "sqlite":
            url = f"sqlite:///{folder / 'connector.db'}"
        else:
            from sqlalchemy import create_engine, text

            admin = create_engine(PG)
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            url = f"{PG}{'&' if '?' in PG else '?'}options={quote(f'-csearch_path={schema}')}"
        try:
            config = str(build_store(folder, url, options.records))
            commands = {
                "--help": ["--help"],
                "status": ["status", "--config", config],
                "status --json": ["status", "--json", "--config", config],
                "explain": ["explain", "sfdc", "Lead", "L000007", "--config", config],
            }
            print(f"{options.records} records on {options.db}; load average {os.getloadavg()}; "
                  f"median of {options.runs} fresh processes")
            results = {}
            for name, args in commands.items():
                run(args, folder)  # warm the file cache and the bytecode
                times = [run(args, folder) for _ in range(options.runs)]
                results[name] = {"wall_s": round(statistics.median(t[0] for t in times), 3),
                                 "cpu_s": round(statistics.median(t[1] for t in times), 3),
                                 "modules": module_count(args, folder)}
                print(f"  {name:14} wall {results[name]['wall_s']:.3f} s  cpu {results[name]['cpu_s']:.3f} s  "
                      f"{results[name]['modules']} modules", flush=True)
            print(json.dumps(results))
        finally:
            if options.db == "postgresql":
                with admin.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
