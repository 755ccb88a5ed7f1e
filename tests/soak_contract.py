"""The contract machine for a long run, in chunks with fresh seeds, printing progress as it goes.

`CONNECTOR_SLOW=1 pytest tests/test_contract_model.py -k slow` runs the 10,000 interleavings as one test
that says nothing until it ends; this runs the same machine in chunks of 100, so a run of hours can be
watched, stopped and counted at any time:

    python -m tests.soak_contract sqlite 5000
    python -m tests.soak_contract postgresql 5000     # on $CONNECTOR_TEST_PG, in a schema of its own
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import create_engine, text

from connector.store.db import open_store
from tests.test_contract_model import machine_for

CHUNK = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", choices=["sqlite", "postgresql"])
    parser.add_argument("examples", type=int, help="interleavings to run, in chunks of 100")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="connector-soak-"))
    schema = None
    if args.database == "sqlite":
        url = f"sqlite:///{folder}/contract.db"
    else:
        base = os.environ.get("CONNECTOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        schema = f"soak_{uuid.uuid4().hex[:8]}"
        with create_engine(base).begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"
    store = open_store(url)
    started, done, failing = time.monotonic(), 0, 0
    try:
        while done < args.examples:
            chunk = settings(
                max_examples=min(CHUNK, args.examples - done),
                stateful_step_count=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            try:
                run_state_machine_as_test(machine_for(store, folder), settings=chunk)
            except Exception:
                failing += 1
                traceback.print_exc()
            done += min(CHUNK, args.examples - done)
            elapsed = time.monotonic() - started
            print(f"{args.database}: {done} interleavings, {failing} failing chunks, {elapsed:.0f} s", flush=True)
    finally:
        store.close()
        if schema is not None:
            with create_engine(base).begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
