"""A pull that test_store.py kills with SIGKILL: applies a long, fixed run of pages to a SQLite file.

Run as `python tests/_kill_target.py DATABASE_URL CONFIG_FILE`. It resumes from the stored cursor the
way a restarted pull does (the page at the cursor is read again, as the lookback would) and prints
`committed N` after each page's transaction commits.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.config import SyncedObject, load_config
from connector.engine import Engine
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store.db import Store, open_store

MAPPING = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress}
  - {name: Won, category: succeeded, sticky: true}
  - {name: Lost, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Closed Won: Won
  Closed Lost: Lost
"""

CONFIG = """\
database: sqlite:///unused.db
sources:
  crm:
    type: salesforce
    instance_url: https://crm.invalid
    auth: {method: token, access_token: not-a-secret}
    objects:
      Lead: {status_field: Status, mapping: kill-mapping.yaml}
"""

STATUSES = ["Open", "Contacted", "Closed Won", "Closed Lost", "Recycled"]
PAGES = 120
PER_PAGE = 20
RECORDS = 60
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def write_config(folder: Path) -> Path:
    (folder / "kill-mapping.yaml").write_text(MAPPING, encoding="utf-8")
    config = folder / "kill-config.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def pages() -> list[Page]:
    """The CRM's changes in modified order, one page per minute; a record changes many times."""
    rng = random.Random(20240501)
    out = []
    for number in range(PAGES):
        at = T0 + timedelta(minutes=number)
        ids = sorted(rng.sample([f"L{i:04d}" for i in range(RECORDS)], PER_PAGE))
        records = [RemoteRecord(i, rng.choice(STATUSES), at) for i in ids]
        out.append(Page(records, Cursor(at, ids[-1])))
    return out


def remaining(cursor: Cursor, all_pages: list[Page]) -> list[Page]:
    """What a restarted pull reads: from the page at the stored cursor (the lookback) on."""
    if cursor.modified_at is None:
        return all_pages
    return [p for p in all_pages if (p.cursor.modified_at, p.cursor.last_id) >= (cursor.modified_at, cursor.last_id)]


def resume(store: Store, synced: SyncedObject, engine: Engine, report: bool = False) -> int:
    applied = 0
    for page in remaining(engine.cursor(synced), pages()):
        assert page.cursor.modified_at is not None
        engine.apply_page(synced, page, page.cursor.modified_at)
        applied += 1
        if report:
            print(f"committed {applied}", flush=True)
    return applied


def main(url: str, config_file: str) -> None:
    config = load_config(Path(config_file), environ={})
    store = open_store(url)
    try:
        resume(store, config.object("crm", "Lead"), Engine(config, store, sources={}), report=True)
        print("finished", flush=True)
    finally:
        store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
