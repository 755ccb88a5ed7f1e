"""`connector outbox` through the CLI runner, on SQLite and PostgreSQL: listing, JSON, retrying dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import load_config
from connector.engine import Engine
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store import repo
from connector.store.db import open_store
from tests.support import offline_config

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
IDS = [f"00Q00000000000{n}AAA" for n in range(1, 5)]
ERROR = "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: bad value for restricted picklist field: Working - Contacted"


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Path:
    """Four leads with a write-back each: 1 and 2 dead with the CRM's words, 3 pending, 4 done."""
    mapping = (ROOT / "mappings/salesforce-lead.yaml").read_text()
    path = offline_config(tmp_path, mapping, database=db_url, source="sfdc")
    config = load_config(path)
    store = open_store(config.database_url)
    engine = Engine(config, store, {})
    synced = engine.synced("sfdc", "Lead")
    records = [RemoteRecord(i, "Open - Not Contacted", T0) for i in IDS]
    engine.apply_page(synced, Page(records, Cursor(T0, IDS[-1])), T0)
    for rid in IDS:
        engine.set_stage(synced, rid, "Working", T0)
    with store.transaction() as session:
        items = {i.external_id: i for i in repo.outbox_items(session, "sfdc", "Lead")}
        repo.finish_items(session, [(items[i].id, items[i].version) for i in IDS[:2]], "dead", T0, ERROR)
        repo.finish_items(session, [(items[IDS[3]].id, items[IDS[3]].version)], "done", T0)
    store.close()
    return path


def run(config_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config_path), "--now", "2026-03-02T10:00:00Z"])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_lists_what_waits_and_what_failed_with_the_crms_words(config_path: Path) -> None:
    code, out = run(config_path, "outbox", "--json")
    assert code == 0
    items = json.loads(out)["items"]
    assert {i["id"]: i["state"] for i in items} == {IDS[0]: "dead", IDS[1]: "dead", IDS[2]: "pending"}
    first = items[0]
    assert set(first) == {"source", "object", "id", "status", "state", "attempts", "error", "queued_at"}
    assert first["status"] == "Working - Contacted" and first["queued_at"] == "2026-03-02T09:00:00Z"
    assert {i["error"] for i in items if i["state"] == "dead"} == {ERROR}

    code, out = run(config_path, "outbox", "sfdc", "Lead", "--dead")
    assert code == 0
    assert f"{IDS[0]}: dead 'Working - Contacted'" in out and ERROR in out and IDS[2] not in out
    code, out = run(config_path, "outbox", "sfdc", "--pending", "--json")
    assert [i["id"] for i in json.loads(out)["items"]] == [IDS[2]]


def test_retry_by_id_makes_a_dead_letter_pending_again(config_path: Path) -> None:
    code, out = run(config_path, "outbox", "retry", "sfdc", "Lead", "--ids", IDS[0])
    assert code == 0, out
    assert "1 dead letter re-queued" in out
    items = {i["id"]: i for i in json.loads(run(config_path, "outbox", "--json")[1])["items"]}
    assert items[IDS[0]]["state"] == "pending" and items[IDS[0]]["attempts"] == 0 and items[IDS[0]]["error"] is None
    assert items[IDS[1]]["state"] == "dead"
    store = open_store(load_config(config_path).database_url)
    try:
        with store.transaction() as session:
            due = repo.claim_due(session, "sfdc", "Lead", datetime(2026, 3, 2, 10, 0, tzinfo=UTC), 10)
            assert IDS[0] in {i.external_id for i in due}  # due now, so the next drain sends it
    finally:
        store.close()


def test_retry_dead_requeues_every_dead_letter(config_path: Path) -> None:
    code, out = run(config_path, "outbox", "retry", "sfdc", "Lead", "--dead", "--json")
    assert code == 0
    assert sorted(json.loads(out)["requeued"]) == IDS[:2]
    assert json.loads(run(config_path, "outbox", "--dead", "--json")[1])["items"] == []


def test_retry_reports_an_id_that_is_not_dead(config_path: Path) -> None:
    code, out = run(config_path, "outbox", "retry", "sfdc", "Lead", "--ids", f"{IDS[3]},{IDS[2]},{IDS[0]}")
    assert code == 1
    assert f"{IDS[3]}: not a dead letter (its last write-back is done)" in out
    assert f"{IDS[2]}: not a dead letter (its last write-back is pending)" in out
    assert "1 dead letter re-queued" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sfdc", "Laed", "--ids", IDS[0]], "unknown object 'Laed' in source 'sfdc'"),
        (["sfcd", "Lead", "--dead"], "sfdc"),
        (["sfdc", "Lead", "--ids", "00Q000000000001AAB"], "did you mean 00Q000000000001AAA"),
        (["sfdc", "Lead"], "needs --ids ID,... or --dead"),
    ],
)
def test_retry_names_what_is_unknown(config_path: Path, args: list[str], message: str) -> None:
    code, out = run(config_path, "outbox", "retry", *args)
    assert code == 2 and message in out
    assert json.loads(run(config_path, "outbox", "--dead", "--json")[1])["items"] != []
