"""`connector explain` as a person reads it: no None, durations in words, locks, stale writes, merges."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import update

from connector.cli import main
from connector.config import load_config
from connector.engine import Engine
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store.db import open_store
from connector.store.schema import Record
from tests.support import offline_config

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WORKING, STICKY, MERGED = "00Q000000000001AAA", "00Q000000000002AAA", "00Q000000000003AAA"


def _config(tmp_path: Path, db_url: str) -> Path:
    mapping = (ROOT / "mappings/salesforce-lead.yaml").read_text()
    path = offline_config(tmp_path, mapping, database=db_url, source="sfdc")
    store = open_store(load_config(path).database_url)
    engine = Engine(load_config(path), store, {})
    synced = engine.synced("sfdc", "Lead")
    ids = (WORKING, STICKY, MERGED)
    engine.apply_page(synced, Page([RemoteRecord(i, "Working - Contacted", T0) for i in ids], Cursor(T0, MERGED)), T0)
    engine.set_stage(synced, STICKY, "Converted", T0)  # sticky and set by hand: locked
    engine.set_stage(synced, WORKING, "New", T0)  # queued, then made stale by a person's edit in the CRM
    later = T0 + timedelta(minutes=5)
    for rid, status in ((WORKING, "Closed - Not Converted"), (MERGED, "Working - Contacted")):
        engine.apply_page(synced, Page([RemoteRecord(rid, status, later)], Cursor(later, rid)), later)
    with store.transaction() as session:
        session.execute(update(Record).where(Record.external_id == MERGED).values(merged_into="00Q000000000009AAA"))
    store.close()
    return path


def explain(config: Path, rid: str, *more: str) -> str:
    result = CliRunner().invoke(main, ["explain", "sfdc", "Lead", rid, *more, "--config", str(config)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return result.output


def test_text_reads_as_sentences(tmp_path: Path, db_url: str) -> None:
    config = _config(tmp_path, db_url)
    merged = explain(config, MERGED)
    assert "None" not in merged and "0:00:00" not in merged
    assert "gone-quiet: on inactive for 14 days -> Unresponsive" in merged
    assert "merged into 00Q000000000009AAA" in merged
    assert json.loads(explain(config, MERGED, "--json"))["merged_into"] == "00Q000000000009AAA"


def test_a_locked_record_says_how_to_unlock_and_lists_no_triggers(tmp_path: Path, db_url: str) -> None:
    out = explain(_config(tmp_path, db_url), STICKY)
    assert "connector stage unlock sfdc Lead 00Q000000000002AAA" in out
    assert "triggers that can move it" not in out and "opted-out" not in out


def test_a_cancelled_stale_write_back_shows_in_the_text(tmp_path: Path, db_url: str) -> None:
    config = _config(tmp_path, db_url)
    out = explain(config, WORKING)
    assert "cancelled write-back 'Open - Not Contacted'" in out and "the CRM wins" in out
    data = json.loads(explain(config, WORKING, "--json"))
    assert [w["state"] for w in data["writebacks"]] == ["cancelled"]


def test_a_criteria_move_and_the_triggers_from_here_read_with_their_values(tmp_path: Path) -> None:
    mapping = (ROOT / "mappings/salesforce-lead.yaml").read_text().replace(
        "overrides:\n",
        "  - {name: hot, on: {field: Score__c, gte: 50}, from: [New], to: Working}\n"
        "  - {name: fit, on: {field: Rating, in: [Hot, Warm]}, from: [Working], to: Converted}\n"
        "overrides:\n",
    )
    path = offline_config(tmp_path, mapping, database=f"sqlite:///{tmp_path}/c.db", source="sfdc")
    config = load_config(path)
    store = open_store(config.database_url)
    engine = Engine(config, store, {})
    synced = engine.synced("sfdc", "Lead")
    fields: dict[str, object] = {"Score__c": 12.0, "Rating": None}
    engine.apply_page(synced, Page([RemoteRecord(WORKING, "Open - Not Contacted", T0, fields=fields)], Cursor()), T0)
    later = T0 + timedelta(minutes=1)
    raised = RemoteRecord(WORKING, "Open - Not Contacted", later, fields={**fields, "Score__c": 57.5})
    engine.apply_page(synced, Page([raised], Cursor()), later)
    store.close()
    out = explain(path, WORKING)
    assert "New -> Working" in out and "criteria hot: Score__c 12.0 -> 57.5 (gte 50)" in out
    assert "fit: on Rating in [Hot, Warm] (when it becomes true) -> Converted" in out
    data = json.loads(explain(path, WORKING, "--json"))
    assert data["history"][-1]["cause"] == "criteria" and data["pending_writeback"] == "Working - Contacted"


def test_a_record_first_seen_with_an_unmapped_status_reads_as_unplaced(tmp_path: Path) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path}/c.db")
    store = open_store(load_config(config).database_url)
    engine = Engine(load_config(config), store, {})
    odd = "00Q000000000004AAA"
    engine.apply_page(engine.synced("sfdc", "Lead"), Page([RemoteRecord(odd, "Nurture", T0)], Cursor(T0, odd)), T0)
    store.close()
    out = explain(config, odd)
    assert "(new, no stage)" in out and "(out)" not in out, out
    assert "'Nurture' is not in the mapping" in out
