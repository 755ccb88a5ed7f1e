"""`connector report funnel`: numbers checked against a history built by hand through the engine.

The fixture (days after 2026-03-01T00:00Z; every move is a CRM status read at that instant):

    L1: New@0 -> Working@2 -> Meeting Set@5 -> Won@9
    L2: New@0 -> Working@1 -> Unresponsive@11, then a suppressed trigger (booked) at 12
    L3: New@1 -> Working@4, then set to Working by hand at 7 (a same-stage set: no move)
    L4: New@2 -> Unresponsive@3 -> Working@6 -> Meeting Set@10
    L5: New@3
    L6: New@0 -> Working@2, deleted in the CRM at 4 (out of the funnel altogether)
    L7: Working@5 -> Meeting Set@6

Funnel order: New, Working, Meeting Set, Won (succeeded), Unresponsive (not succeeded).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector import reports
from connector.cli import main
from connector.config import load_config
from connector.engine import Engine
from connector.mapping import Category
from connector.reports import Move
from connector.sources.base import Cursor, Page, RemoteEvent, RemoteRecord
from connector.store.db import open_store
from tests.support import offline_config

pytestmark = pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning")

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = 86400  # seconds

MAPPING = """\
stages:
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress}
  - {name: Meeting Set,  category: succeeded}
  - {name: Won,          category: succeeded}
  - {name: Unresponsive, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Meeting: Meeting Set
  Closed Won: Won
  No Response: Unresponsive
triggers:
  - {name: booked, on: meeting_booked, to: Meeting Set}
"""

STATUS = {
    "New": "Open",
    "Working": "Contacted",
    "Meeting Set": "Meeting",
    "Won": "Closed Won",
    "Unresponsive": "No Response",
}
HISTORY = {
    "L1": [(0, "New"), (2, "Working"), (5, "Meeting Set"), (9, "Won")],
    "L2": [(0, "New"), (1, "Working"), (11, "Unresponsive")],
    "L3": [(1, "New"), (4, "Working")],
    "L4": [(2, "New"), (3, "Unresponsive"), (6, "Working"), (10, "Meeting Set")],
    "L5": [(3, "New")],
    "L6": [(0, "New"), (2, "Working"), (4, None)],
    "L7": [(5, "Working"), (6, "Meeting Set")],
}


def day(n: float) -> datetime:
    return DAY0 + timedelta(days=n)


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Iterator[Path]:
    path = offline_config(tmp_path, MAPPING, database=db_url, source="sfdc", mapping_file="lead.yaml")
    store = open_store(db_url)
    engine = Engine(load_config(path), store, {})
    synced = engine.synced("sfdc", "Lead")
    moves = sorted((at, record, stage) for record, steps in HISTORY.items() for at, stage in steps)
    for at, record, stage in moves:
        remote = RemoteRecord(record, STATUS[stage] if stage else None, day(at), deleted=stage is None)
        engine.apply_page(synced, Page([remote], Cursor(day(at), record)), day(at))
    engine.apply_events(synced, [RemoteEvent("L2", "meeting_booked", day(12), "booked-L2")], day(12))
    engine.set_stage(synced, "L3", "Working", day(7))
    store.close()
    yield path


def run(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def stage_numbers(data: dict[str, object]) -> dict[str, tuple[object, ...]]:
    [obj] = data["objects"]  # type: ignore[index]
    return {
        s["stage"]: (
            s["count"],
            s["entered"],
            s["converted"],
            s["conversion_rate"],
            s["median_seconds_in_stage"],
            s["completed_stays"],
            s["lost"],
            s["lost_rate"],
        )
        for s in obj["stages"]
    }


def test_funnel_numbers_match_the_hand_computed_fixture(config_path: Path) -> None:
    result = run(["report", "funnel", "--config", str(config_path), "--format", "json", "--now", day(20).isoformat()])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["objects"][0]["records"] == 6  # L6 is deleted
    assert data["objects"][0]["by_category"] == {"in_progress": 2, "succeeded": 3, "not_succeeded": 1}
    # (count now, entered, converted, conversion, median seconds in stage, completed stays, lost, lost share)
    assert stage_numbers(data) == {
        # now: L5. Entered: L1 L2 L3 L4 L5 = 5; reached a later stage: L1 L2 L3 L4 (L4 via Working@6) = 4/5;
        # stays: L1 2d, L2 1d, L3 3d, L4 1d -> median of [1, 1, 2, 3] = 1.5d; lost: L4 (New -> Unresponsive) = 1/5.
        "New": (1, 5, 4, 0.8, 1.5 * DAY, 4, 1, 0.2),
        # now: L3. Entered: L1 L2 L3 L4 L7 = 5; reached Meeting Set or Won: L1 L4 L7 = 3/5;
        # stays: L1 3d, L2 10d, L4 4d, L7 1d (L3's is open) -> median of [1, 3, 4, 10] = 3.5d; lost: L2 = 1/5.
        "Working": (1, 5, 3, 0.6, 3.5 * DAY, 4, 1, 0.2),
        # now: L4 L7. Entered: L1 L4 L7 = 3; reached Won: L1 = 1/3; stays: L1 4d (the others are open); lost 0.
        "Meeting Set": (2, 3, 1, 0.3333, 4 * DAY, 1, 0, 0.0),
        # now: L1. Entered: L1 = 1; no later stage to reach; no stay has ended; lost 0/1.
        "Won": (1, 1, None, None, None, 0, 0, 0.0),
        # now: L2. Entered: L4@3, L2@11 = 2; stays: L4 3d (3 -> 6); the suppressed trigger on L2 is no move.
        "Unresponsive": (1, 2, None, None, 3 * DAY, 1, None, None),
    }


def test_funnel_since_counts_only_later_moves(config_path: Path) -> None:
    result = run(
        ["report", "funnel", "sfdc", "Lead", "--config", str(config_path), "--format", "json", "--since", "2026-03-05"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["since"] == "2026-03-05T00:00:00Z"
    assert stage_numbers(data) == {
        # Moves at or after day 4: L1 MS@5 Won@9; L2 Unr@11; L3 W@4; L4 W@6 MS@10; L7 W@5 MS@6. Counts are now's.
        "New": (1, 0, 0, None, None, 0, 0, None),
        # Entered: L3@4 L7@5 L4@6 = 3; reached Meeting Set: L4 L7 = 2/3; stays: L7 1d, L4 4d -> 2.5d; lost 0/3.
        "Working": (1, 3, 2, 0.6667, 2.5 * DAY, 2, 0, 0.0),
        # Entered: L1@5 L7@6 L4@10 = 3; reached Won: L1 = 1/3; stays: L1 4d.
        "Meeting Set": (2, 3, 1, 0.3333, 4 * DAY, 1, 0, 0.0),
        "Won": (1, 1, None, None, None, 0, 0, 0.0),
        # Entered: L2@11 (L2's Working stay began before the period: it is not an entrant of Working).
        "Unresponsive": (1, 1, None, None, None, 0, None, None),
    }
    relative = run(
        [
            "report",
            "funnel",
            "--config",
            str(config_path),
            "--format",
            "json",
            "--since",
            "16d",
            "--now",
            day(20).isoformat(),
        ]
    )
    assert json.loads(relative.stdout)["since"] == "2026-03-05T00:00:00Z"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_funnel_table_and_csv(config_path: Path, tmp_path: Path) -> None:
    table = run(["report", "funnel", "--config", str(config_path), "--now", "2026-03-15T12:00:00Z"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines() == [
        "sfdc Lead: all moves up to 2026-03-15 12:00 UTC; 6 records now",
        "  stage               now  entered  reached a later stage   median (stays)    left for not succeeded",
        "  in progress           2",
        "    New                 1        5  4 (80%)                 1.5d (4)          1 (20%)",
        "    Working             1        5  3 (60%)                 3.5d (4)          1 (20%)",
        "  succeeded             3",
        "    Meeting Set         2        3  1 (33%)                 4.0d (1)          0 (0%)",
        "    Won                 1        1  —                       —                 0 (0%)",
        "  not succeeded         1",
        "    Unresponsive        1        2  —                       3.0d (1)          —",
        "  overall: 2 of 5 records that entered New reached a succeeded stage (40%)",  # L1 and L4
        "",
        "'entered': the records that entered the stage in the period, so bars need not shrink from stage to stage: "
        "a record may skip a stage, or have entered an earlier one before the period.",
    ]
    overall = json.loads(run(["report", "funnel", "--config", str(config_path), "--format", "json"]).stdout)
    assert overall["objects"][0]["overall"] == {
        "from_stage": "New", "entered": 5, "reached_succeeded": 2, "conversion_rate": 0.4,
    }
    out = tmp_path / "funnel.csv"
    written = run(["report", "funnel", "sfdc", "--config", str(config_path), "--format", "csv", "--out", str(out)])
    assert written.stdout == f"wrote {out}\n"
    lines = out.read_text().splitlines()
    assert lines[0] == (
        "source,object,category,stage,count,entered,converted,conversion_rate,median_seconds_in_stage,"
        "completed_stays,lost,lost_rate"
    )
    assert lines[2] == "sfdc,Lead,in_progress,Working,1,5,3,0.6,302400,4,1,0.2"
    assert lines[5] == "sfdc,Lead,not_succeeded,Unresponsive,1,2,,,259200,1,,"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_funnel_png_is_written(config_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "funnel.png"
    result = run(["report", "funnel", "--config", str(config_path), "--format", "png", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1200 and height > 400


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_funnel_bad_usage_exits_2(config_path: Path) -> None:
    unknown = run(["report", "funnel", "sfcd", "--config", str(config_path)])
    assert unknown.exit_code == 2
    assert "unknown source 'sfcd' (did you mean 'sfdc'?)" in unknown.stderr
    bad_since = run(["report", "funnel", "--config", str(config_path), "--since", "last week"])
    assert bad_since.exit_code == 2
    assert "--since 'last week'" in bad_since.stderr


# --- the arithmetic alone --------------------------------------------------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_reentry_counts_once_and_every_stay_counts_for_the_median(config_path: Path) -> None:
    mapping = load_config(config_path).object("sfdc", "Lead").mapping
    moves = [
        Move(1, day(0), None, "New"),
        Move(1, day(1), "New", "Working"),
        Move(1, day(3), "Working", "Unresponsive"),
        Move(1, day(5), "Unresponsive", "Working"),
        Move(1, day(6), "Working", "Meeting Set"),
    ]
    stages, unstaged = reports.compute_funnel(mapping, moves, {"Meeting Set": 1, None: 2, "Gone": 1})
    working = next(s for s in stages if s.stage == "Working")
    # One entrant; it reached Meeting Set (1/1); its first stay ended in Unresponsive (lost 1/1);
    # stays of 2d and 1d -> median 1.5d.
    assert (working.entered, working.converted, working.lost, working.median, working.stays) == (
        1,
        1,
        1,
        timedelta(days=1.5),
        2,
    )
    assert working.category is Category.IN_PROGRESS
    assert unstaged == {"(no stage)": 2, "Gone": 1}
