"""`connector import`: good rows apply as import sets queued for write-back, bad rows go to the rejects file."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from connector import cli_reports, importer
from connector.cli import main
from connector.config import SyncedObject, load_config
from connector.engine import Engine
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store.db import Store, open_store
from connector.store.schema import OutboxItem, Record, TransitionRow
from tests.support import offline_config

# tenacity 9.2 deprecates `wait_exponential_jitter(initial=...)`, which `Store.run` passes (store/db.py).
pytestmark = pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning")

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)

MAPPING = """\
stages:
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress}
  - {name: Meeting Set,  category: succeeded, sticky: true}
  - {name: Unresponsive, category: not_succeeded}
statuses:
  Open - Not Contacted: New
  Working - Contacted: Working
  Closed - Converted: Meeting Set
  Closed - Not Converted: Unresponsive
"""

# Fifteen-character Salesforce ids (as reports export them) and their eighteen-character forms.
ID15 = "00Q5e00000AbCdE"
ID18 = importer.salesforce_id18(ID15)


def write_config(folder: Path, db_url: str) -> Path:
    return offline_config(folder, MAPPING, database=db_url, source="sfdc", mapping_file="lead.yaml")


@pytest.fixture
def setup(tmp_path: Path, db_url: str) -> Iterator[tuple[Path, Engine, SyncedObject]]:
    """A config, and a store holding leads L1..L6 (L1..L5 in New, L6 deleted) and the 18-character id."""
    path = write_config(tmp_path, db_url)
    config = load_config(path)
    store = open_store(db_url)
    engine = Engine(config, store, {})
    synced = engine.synced("sfdc", "Lead")
    records = [RemoteRecord(f"L{i}", "Open - Not Contacted", T0) for i in range(1, 6)]
    records += [RemoteRecord("L6", "Open - Not Contacted", T0), RemoteRecord(ID18, "Open - Not Contacted", T0)]
    engine.apply_page(synced, Page(records, Cursor(T0, ID18)), T0)
    engine.apply_page(synced, Page([RemoteRecord("L6", None, T0, deleted=True)], Cursor(T0, "L6")), T0)
    yield path, engine, synced
    store.close()


def run(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def stages(store: Store) -> dict[str, tuple[str | None, str | None]]:
    with store.transaction() as session:
        return {r.external_id: (r.stage, r.set_by) for r in session.scalars(select(Record))}


def pending(store: Store) -> dict[str, str]:
    with store.transaction() as session:
        items = session.scalars(select(OutboxItem).where(OutboxItem.state == "pending"))
        return {i.external_id: i.status for i in items}


def read_rejects(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def test_bad_rows_are_rejected_with_reasons_good_rows_apply_and_exit_is_1(
    setup: tuple[Path, Engine, SyncedObject],
) -> None:
    """The issue's must-show: a spreadsheet export (UTF-8 with BOM, semicolons) with good and bad rows."""
    config, engine, _ = setup
    rows = [
        "Lead Id;Stage;Note",
        "L1;Working;by stage name",  # line 2: applies
        "L2;Closed - Converted;by CRM status",  # line 3: applies, as Meeting Set
        "L3;working;case differs",  # line 4: near miss, rejected with the suggestion
        "L9;Working;no such lead",  # line 5: unknown id
        "L4;Working;first of two",  # line 6: duplicate id
        "L4;Meeting Set;second of two",  # line 7: duplicate id
        "L5;New;already there",  # line 8: unchanged
        "L6;Working;deleted",  # line 9: deleted in the CRM
        "L5;Working;x;stray",  # line 10: malformed, one field too many
        "",  # blank lines are no rows
        f"{ID15};Unresponsive;15-character id",  # line 12: applies to the 18-character record
        ";;",  # only delimiters: no row either
    ]
    csv_path = config.parent / "leads.csv"
    csv_path.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))

    result = run(
        [
            "import",
            str(csv_path),
            "--source",
            "sfdc",
            "--object",
            "Lead",
            "--config",
            str(config),
            "--now",
            NOW.isoformat(),
        ]
    )

    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        "read leads.csv: UTF-8 with BOM, semicolon-delimited; ids from 'Lead Id', stages from 'Stage'",
        "sfdc Lead: 10 rows: 3 applied, 6 rejected, 1 unchanged; 3 write-backs queued; "
        f"rejects in {config.parent / 'leads.rejects.csv'}",
    ]
    assert "leads.csv:4: unknown stage or status 'working' (did you mean 'Working'?)" in result.stderr
    rejects = read_rejects(config.parent / "leads.rejects.csv")
    assert [(r["line"], r["reason"]) for r in rejects] == [
        ("4", "unknown stage or status 'working' (did you mean 'Working'?)"),
        ("5", "no record 'L9' in sfdc Lead"),
        ("6", "duplicate id 'L4' (also on line 7)"),
        ("7", "duplicate id 'L4' (also on line 6)"),
        ("9", "record 'L6' was deleted in the CRM"),
        ("10", "malformed line: 4 fields where the header has 3 (a stray delimiter or quote?)"),
    ]
    # The rejected rows keep their cells, so the file can be fixed and imported again.
    assert [r["Lead Id"] for r in rejects] == ["L3", "L9", "L4", "L4", "L6", "L5"]

    now = stages(engine.store)
    assert now["L1"] == ("Working", "import")
    assert now["L2"] == ("Meeting Set", "import")
    assert now[ID18] == ("Unresponsive", "import")
    assert now["L3"] == now["L4"] == now["L5"] == ("New", "external")
    assert pending(engine.store) == {
        "L1": "Working - Contacted",
        "L2": "Closed - Converted",
        ID18: "Closed - Not Converted",
    }
    with engine.store.transaction() as session:
        history = session.execute(
            select(Record.external_id, TransitionRow.cause, TransitionRow.detail, TransitionRow.at)
            .join(Record, Record.id == TransitionRow.record_id)
            .where(TransitionRow.cause == "import")
        ).all()
    assert sorted(history) == [(i, "import", "imported from leads.csv", NOW) for i in sorted(["L1", "L2", ID18])]

    # Fix the near miss in the rejects file, drop the rows that cannot apply, and import it: exit 0.
    fixed = config.parent / "fixed.csv"
    with fixed.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["line", "reason", "Lead Id", "Stage", "Note"])
        writer.writerow([4, rejects[0]["reason"], "L3", "Working", "fixed"])
    again = run(["import", str(fixed), "--source", "sfdc", "--object", "Lead", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "1 rows: 1 applied, 0 rejected, 0 unchanged; 1 write-backs queued" in again.stdout
    assert stages(engine.store)["L3"] == ("Working", "import")
    assert not (config.parent / "fixed.rejects.csv").exists()


def test_all_rows_good_exit_0_commas_and_default_columns(setup: tuple[Path, Engine, SyncedObject]) -> None:
    config, engine, _ = setup
    csv_path = config.parent / "plain.csv"
    csv_path.write_text('Id,Status,Comment\nL1,Working - Contacted,"called, left a message"\nL2,New,\n')
    result = run(["import", str(csv_path), "--source", "sfdc", "--object", "Lead", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "read plain.csv: UTF-8, comma-delimited; ids from 'Id', stages from 'Status'",
        "sfdc Lead: 2 rows: 1 applied, 0 rejected, 1 unchanged; 1 write-backs queued",
    ]
    assert result.stderr == ""
    assert stages(engine.store)["L1"] == ("Working", "import")
    assert not (config.parent / "plain.rejects.csv").exists()


def test_dry_run_changes_nothing_but_reports_and_writes_rejects(setup: tuple[Path, Engine, SyncedObject]) -> None:
    config, engine, _ = setup
    csv_path = config.parent / "try.csv"
    csv_path.write_text("id,stage\nL1,Working\nL2,Won\n")
    rejects = config.parent / "out" / "rejected.csv"
    rejects.parent.mkdir()
    result = run(
        [
            "import",
            str(csv_path),
            "--source",
            "sfdc",
            "--object",
            "Lead",
            "--config",
            str(config),
            "--dry-run",
            "--rejects",
            str(rejects),
        ]
    )
    assert result.exit_code == 1
    assert f"dry run: sfdc Lead: 2 rows: 1 would apply, 1 rejected, 0 unchanged; rejects in {rejects}" in result.stdout
    assert stages(engine.store)["L1"] == ("New", "external")
    assert pending(engine.store) == {}
    with rejects.open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["line", "reason", "id", "stage"],
            ["3", "unknown stage or status 'Won'", "L2", "Won"],
        ]


def test_bad_usage_exits_2_naming_what_exists(setup: tuple[Path, Engine, SyncedObject]) -> None:
    config, _, _ = setup
    csv_path = config.parent / "cols.csv"
    csv_path.write_text("Record,Phase\nL1,Working\n")
    base = ["--source", "sfdc", "--object", "Lead", "--config", str(config)]

    missing = run(["import", str(config.parent / "nope.csv"), *base])
    assert missing.exit_code == 2
    assert "nope.csv' does not exist" in missing.stderr

    no_default = run(["import", str(csv_path), *base])
    assert no_default.exit_code == 2
    assert no_default.stderr == (
        f"error: {csv_path}: which column holds the record ids? Name it with --id-column; "
        "its columns: 'Record', 'Phase'\n"
    )
    unknown = run(["import", str(csv_path), *base, "--id-column", "Record", "--stage-column", "Phaze"])
    assert unknown.exit_code == 2
    assert unknown.stderr == (
        f"error: {csv_path} has no column 'Phaze' (did you mean 'Phase'?); its columns: 'Record', 'Phase'\n"
    )
    ok = run(["import", str(csv_path), *base, "--id-column", " record ", "--stage-column", "PHASE"])
    assert ok.exit_code == 0, ok.output

    wrong_object = run(["import", str(csv_path), "--source", "sfdc", "--object", "Leed", "--config", str(config)])
    assert wrong_object.exit_code == 2
    assert "unknown object 'Leed' in source 'sfdc' (did you mean 'Lead'?)" in wrong_object.stderr

    empty = config.parent / "empty.csv"
    empty.write_text("\n\n")
    assert run(["import", str(empty), *base]).exit_code == 2


def test_progress_on_large_files_is_plain_lines_when_not_a_terminal(
    setup: tuple[Path, Engine, SyncedObject], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _, _ = setup
    monkeypatch.setattr(cli_reports, "LARGE", 3)
    monkeypatch.setattr(importer, "CHUNK", 2)
    csv_path = config.parent / "big.csv"
    csv_path.write_text("id,stage\n" + "".join(f"L{i},Working\n" for i in range(1, 6)))
    result = run(["import", str(csv_path), "--source", "sfdc", "--object", "Lead", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "import: 2/5 rows applied",
        "import: 4/5 rows applied",
        "import: 5/5 rows applied",
    ]
    assert "5 applied" in result.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_large_import_applies_in_chunks(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "CHUNK", 400)
    config_path = write_config(tmp_path, db_url)
    store = open_store(db_url)
    try:
        engine = Engine(load_config(config_path), store, {})
        synced = engine.synced("sfdc", "Lead")
        ids = [f"B{i:05d}" for i in range(1000)]
        engine.apply_page(synced, Page([RemoteRecord(i, "Open - Not Contacted", T0) for i in ids], Cursor()), T0)
        csv_path = tmp_path / "big.csv"
        csv_path.write_text("id,stage\n" + "".join(f"{i},Working\n" for i in ids))
        seen: list[tuple[int, int]] = []
        report = importer.run_import(
            engine, synced, csv_path, NOW, progress=lambda total: lambda done, of: seen.append((done, of))
        )
        assert (report.applied, report.rejected, report.writebacks) == (1000, 0, 1000)
        assert seen == [(400, 1000), (800, 1000), (1000, 1000)]
        assert len(pending(store)) == 1000
    finally:
        store.close()


# --- reading what spreadsheets write --------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "encoding", "delimiter"),
    [
        ("id;stage\nL1;Working - Contacted\n".encode("utf-8-sig"), "utf-8-sig", ";"),
        (b'id,stage\nL1,"Open, or not"\n', "utf-8", ","),
        ("Id\tÉtape\nL1\tWorking\n".encode("utf-16"), "utf-16", "\t"),
        ("id;stage;note\nL1;Working;caf\u00e9, or not\n".encode("cp1252"), "cp1252", ";"),
        (b"id|stage\nL1|Working\n", "utf-8", "|"),
        (b"id\nL1\n", "utf-8", ","),
    ],
)
def test_encodings_and_delimiters_are_sniffed(tmp_path: Path, data: bytes, encoding: str, delimiter: str) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    table = importer.read_table(path)
    assert (table.encoding, table.delimiter) == (encoding, delimiter)
    assert table.header[0].lower() == "id"
    assert table.lines[0].cells is not None and table.lines[0].cells[0] == "L1"


def test_a_broken_quote_rejects_that_line_and_the_rest_still_apply(setup: tuple[Path, Engine, SyncedObject]) -> None:
    config, engine, synced = setup
    path = config.parent / "quotes.csv"
    path.write_text('id,stage\nL1,"Working"x\nL2,Working\n')
    report = importer.run_import(engine, synced, path, NOW)
    assert [(r.line, r.reason) for r in report.rejects] == [(2, "malformed line: ',' expected after '\"'")]
    assert report.applied == 1
    assert stages(engine.store)["L2"] == ("Working", "import")


def test_stage_names_and_statuses_resolve_exactly(setup: tuple[Path, Engine, SyncedObject]) -> None:
    _, _, synced = setup
    assert importer.resolve_stage(synced, "Meeting Set") == ("Meeting Set", None)
    assert importer.resolve_stage(synced, "Closed - Converted") == ("Meeting Set", None)
    assert importer.resolve_stage(synced, "meeting set") == (
        None,
        "unknown stage or status 'meeting set' (did you mean 'Meeting Set'?)",
    )
    assert importer.resolve_stage(synced, "Closed - converted") == (
        None,
        "unknown stage or status 'Closed - converted' (did you mean 'Closed - Converted'?)",
    )


def test_salesforce_15_character_ids_gain_their_checksum() -> None:
    # The suffix encodes which of each five characters are upper case ("001A0" -> I, "00000" -> A, "6Vm9r" -> C).
    assert importer.salesforce_id18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert importer.salesforce_id18("001000000000001") == "001000000000001AAA"


def test_a_15_character_id_and_its_18_character_form_are_one_record(setup: tuple[Path, Engine, SyncedObject]) -> None:
    config, engine, synced = setup
    kept = "00Q5e00000ZzZzZ"  # a store that holds a 15-character id as it is
    engine.apply_page(synced, Page([RemoteRecord(kept, "Open - Not Contacted", T0)], Cursor()), T0)
    path = config.parent / "ids.csv"
    path.write_text(f"id,stage\n{ID15},Working\n{ID18},New\n{kept},Working\n")
    report = importer.run_import(engine, synced, path, NOW)
    assert [(r.line, r.reason) for r in report.rejects] == [
        (2, f"duplicate id '{ID18}' (also on line 3)"),
        (3, f"duplicate id '{ID18}' (also on line 2)"),
    ]
    assert stages(engine.store)[kept] == ("Working", "import")
