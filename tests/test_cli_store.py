"""The admin commands over the store, through the CLI runner: outputs, JSON shapes, exit codes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector import logs
from connector.cli import main
from connector.config import load_config
from connector.engine import Engine
from connector.errors import ConnectorError
from connector.locks import DaemonLock
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store.db import open_store

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Path:
    mapping = tmp_path / "lead.yaml"
    # The shipped Lead mapping plus a trigger that applies from the sticky stage.
    mapping.write_text(
        (ROOT / "mappings/salesforce-lead.yaml")
        .read_text()
        .replace(
            "triggers:                             # first match in file order wins\n",
            "triggers:\n  - {name: churned, on: unsubscribed, from: [Converted], to: Unresponsive}\n",
        )
    )
    path = tmp_path / "config.yaml"
    path.write_text(
        f"database: {db_url}\n"
        "sources:\n"
        "  sfdc:\n"
        "    type: salesforce\n"
        "    auth: {method: token, access_token: 'tok-SECRET-123', instance_url: https://example.invalid}\n"
        "    objects:\n"
        f"      Lead: {{status_field: Status, mapping: {mapping}}}\n"
    )
    config = load_config(path)
    store = open_store(config.database_url)
    engine = Engine(config, store, {})
    records = [
        RemoteRecord("00Q000000000001AAA", "Open - Not Contacted", T0),
        RemoteRecord("00Q000000000002AAA", "Working - Contacted", T0),
        RemoteRecord("00Q000000000003AAA", "Some Unmapped Value", T0),
    ]
    engine.apply_page(engine.synced("sfdc", "Lead"), Page(records, Cursor(T0, records[-1].id)), T0)
    store.close()
    return path


def run(config_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config_path)], catch_exceptions=False)
    return result.exit_code, result.output


def test_explain_json_has_the_designed_fields(config_path: Path) -> None:
    code, out = run(config_path, "explain", "sfdc", "Lead", "00Q000000000001AAA", "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("source", "object", "id", "stage", "remote_status", "set_by", "locked", "quarantined", "history"):
        assert key in data
    assert data["stage"] == "New" and data["set_by"] == "external" and data["locked"] is False
    entry = data["history"][0]
    assert set(entry) >= {"at", "from", "to", "cause", "rule", "suppressed", "reason"}
    assert entry["to"] == "New" and entry["cause"] == "external" and entry["suppressed"] is False


def test_trigger_moves_and_explain_shows_why(config_path: Path) -> None:
    code, out = run(
        config_path, "event", "sfdc", "Lead", "00Q000000000001AAA", "email_replied", "--at", "2026-03-02T10:00:00Z"
    )
    assert code == 0 and "New -> Working (trigger 'replied')" in out
    code, out = run(config_path, "explain", "sfdc", "Lead", "00Q000000000001AAA")
    assert code == 0 and "New -> Working" in out and "trigger 'replied'" in out
    assert "pending write-back: 'Working - Contacted'" in out


def test_sticky_manual_set_suppresses_a_trigger_and_unlock_lets_it_apply(config_path: Path) -> None:
    record = "00Q000000000002AAA"
    code, out = run(config_path, "stage", "set", "sfdc", "Lead", record, "Converted")
    assert code == 0 and "write-back of 'Closed - Converted' queued" in out
    code, out = run(config_path, "event", "sfdc", "Lead", record, "unsubscribed", "--at", "2026-03-03T10:00:00Z")
    assert code == 0 and "stays in Converted: manual set; sticky" in out
    data = json.loads(run(config_path, "explain", "sfdc", "Lead", record, "--json")[1])
    assert data["locked"] is True
    assert data["history"][-1]["suppressed"] is True and data["history"][-1]["rule"] == "churned"
    code, out = run(config_path, "stage", "unlock", "sfdc", "Lead", record)
    assert code == 0 and "unlocked in Converted" in out
    assert json.loads(run(config_path, "explain", "sfdc", "Lead", record, "--json")[1])["locked"] is False
    code, out = run(config_path, "event", "sfdc", "Lead", record, "unsubscribed", "--at", "2026-03-04T10:00:00Z")
    assert code == 0 and "Converted -> Unresponsive (trigger 'churned')" in out


def test_the_same_event_twice_is_taken_once(config_path: Path) -> None:
    args = ("event", "sfdc", "Lead", "00Q000000000001AAA", "email_replied", "--at", "2026-03-02T10:00:00Z")
    assert run(config_path, *args)[0] == 0
    code, out = run(config_path, *args)
    assert code == 0 and "already taken in" in out
    history = json.loads(run(config_path, "explain", "sfdc", "Lead", "00Q000000000001AAA", "--json")[1])["history"]
    assert [h["to"] for h in history] == ["New", "Working"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("explain", "sfdc", "Laed", "x"), "unknown object 'Laed' in source 'sfdc' (did you mean 'Lead'?)"),
        (("explain", "sfcd", "Lead", "x"), "unknown source 'sfcd' (did you mean 'sfdc'?)"),
        (
            ("explain", "sfdc", "Lead", "00Q000000000009AAA"),
            "no record '00Q000000000009AAA' in sfdc Lead; did you mean",
        ),
        (
            ("stage", "set", "sfdc", "Lead", "00Q000000000001AAA", "working"),
            "unknown stage 'working' for sfdc Lead (did you mean 'Working'?)",
        ),
        (
            ("event", "sfdc", "Lead", "00Q000000000001AAA", "email_replyd"),
            "unknown event 'email_replyd' (did you mean 'email_replied'?)",
        ),
    ],
)
def test_unknown_names_exit_2_with_a_suggestion(config_path: Path, args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(main, [*args, "--config", str(config_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_status_json_lists_stages_quarantine_and_never_a_secret(config_path: Path) -> None:
    code, out = run(config_path, "status", "--json")
    assert code == 0
    assert "tok-SECRET-123" not in out
    (obj,) = json.loads(out)["objects"]
    for key in ("source", "object", "cursor", "records", "by_stage", "outbox_pending", "outbox_dead", "quarantined"):
        assert key in obj
    assert obj["records"] == 3
    assert obj["by_stage"] == {"New": 1, "Working": 1, "Converted": 0, "Unresponsive": 0}
    assert obj["quarantined"] == 1
    assert obj["quarantined_examples"] == [{"id": "00Q000000000003AAA", "status": "Some Unmapped Value"}]
    assert obj["cursor"]["id"] == "00Q000000000003AAA"


def test_a_quarantined_record_is_cleared_when_a_mapped_status_arrives(config_path: Path) -> None:
    config = load_config(config_path)
    store = open_store(config.database_url)
    engine = Engine(config, store, {})
    later = T0 + timedelta(hours=1)
    page = Page([RemoteRecord("00Q000000000003AAA", "Working - Contacted", later)], Cursor(later, "z"))
    engine.apply_page(engine.synced("sfdc", "Lead"), page, later)
    store.close()
    data = json.loads(run(config_path, "explain", "sfdc", "Lead", "00Q000000000003AAA", "--json")[1])
    assert data["quarantined"] is False and data["stage"] == "Working"
    assert json.loads(run(config_path, "status", "--json")[1])["objects"][0]["quarantined"] == 0


def test_a_second_daemon_on_one_sqlite_file_refuses_with_a_reason(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/one.db")
    first, second = DaemonLock(store.engine), DaemonLock(store.engine)
    first.acquire()
    try:
        with pytest.raises(ConnectorError, match="SQLite allows one daemon per database file"):
            second.acquire()
    finally:
        first.release()
    second.acquire()  # free again once the first stopped
    second.release()
    store.close()


def test_log_lines_never_carry_a_configured_secret(config_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(config_path)
    secrets = logs.secret_values(config)
    assert secrets == ["tok-SECRET-123"]
    handler = logging.StreamHandler()
    handler.addFilter(logs.ScrubSecrets(secrets))
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "login failed with %s", ("tok-SECRET-123",), None)
    handler.filter(record)
    assert record.getMessage() == "login failed with ***"
