"""The SQLite store's WAL is copied into the database file off the writer's thread."""

from __future__ import annotations

import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from connector.rules import RecordState, SetBy
from connector.store import repo
from connector.store.checkpoint import WalCheckpointer, checkpointer_for, pending_frames
from connector.store.db import Store, open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_records(store: Store, count: int, start: int = 0) -> None:
    state = RecordState(stage="New", set_by=SetBy.EXTERNAL, remote_status="Open", stage_entered_at=T0)
    writes = [repo.RecordWrite(f"00Q{i:06d}", None, state) for i in range(start, start + count)]
    store.run(lambda session: repo.save_records(session, "crm", "Lead", writes, T0))


def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def records_in_the_file_alone(database: Path, folder: Path) -> int:
    """What a copy of the database file without its WAL holds: only what a checkpoint copied there."""
    copy = folder / "alone.db"
    shutil.copyfile(database, copy)
    connection = sqlite3.connect(copy)
    try:
        return int(connection.execute("SELECT count(*) FROM records").fetchone()[0])
    except sqlite3.DatabaseError:
        return -1  # copied in the middle of a checkpoint: look again
    finally:
        connection.close()


def test_committed_records_reach_the_database_file_without_the_writer_checkpointing(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    store = open_store(f"sqlite:///{database}")
    try:
        assert store.checkpointer is not None
        store.checkpointer.min_frames = 1  # any commit is worth a checkpoint here
        write_records(store, 300)
        # Far below SQLite's own threshold (10,000 pages): only the background checkpoint copies them.
        until(lambda: store.checkpointer is not None and store.checkpointer.checkpoints >= 1)
        until(lambda: records_in_the_file_alone(database, tmp_path) == 300)
        assert records_in_the_file_alone(database, tmp_path) == 300
        write_records(store, 200, start=300)
        until(lambda: records_in_the_file_alone(database, tmp_path) == 500)
        assert records_in_the_file_alone(database, tmp_path) == 500
    finally:
        store.close()


def test_the_thread_starts_with_the_first_write_and_ends_at_close(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    checkpointer = store.checkpointer
    assert checkpointer is not None
    before = {t.ident for t in threading.enumerate()}
    with store.engine.connect() as connection:  # reads alone start nothing
        connection.exec_driver_sql("SELECT count(*) FROM records").fetchall()
    assert not checkpointer.running
    write_records(store, 10)
    assert checkpointer.running
    store.close()
    assert not checkpointer.running
    assert {t.ident for t in threading.enumerate()} <= before
    checkpointer.poke()  # a closed store's checkpointer starts nothing again
    assert not checkpointer.running


def test_an_idle_thread_ends_and_the_next_write_starts_another(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    open_store(f"sqlite:///{database}").close()
    checkpointer = WalCheckpointer(str(database), idle=0.05, min_frames=0)
    checkpointer.poke()
    until(lambda: not checkpointer.running)
    assert not checkpointer.running and checkpointer.checkpoints == 1
    checkpointer.poke()
    until(lambda: checkpointer.checkpoints == 2)
    assert checkpointer.checkpoints == 2
    checkpointer.close()
    assert not checkpointer.running


def test_a_database_it_cannot_open_ends_the_thread_quietly_and_is_not_created(tmp_path: Path) -> None:
    for gone in (tmp_path / "no such folder" / "store.db", tmp_path / "removed meanwhile.db"):
        checkpointer = WalCheckpointer(str(gone), min_frames=0)
        checkpointer.poke()
        until(lambda: not checkpointer.running)  # noqa: B023 - used before the next iteration
        assert not checkpointer.running and checkpointer.checkpoints == 0
        assert not gone.exists()
        checkpointer.close()


def test_only_a_sqlite_file_gets_one() -> None:
    assert checkpointer_for("/var/lib/connector/connector.db", "sqlite") is not None
    assert checkpointer_for(":memory:", "sqlite") is None
    assert checkpointer_for(None, "sqlite") is None
    assert checkpointer_for("connector", "postgresql") is None


def test_small_commits_wait_until_a_checkpoint_is_worth_its_disk_syncs(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    store = open_store(f"sqlite:///{database}")
    assert store.checkpointer is not None
    store.checkpointer.close()
    store.checkpointer = None  # the WAL is judged here, by a checkpointer of the test's own
    judge = WalCheckpointer(str(database))
    try:
        write_records(store, 20)
        assert not judge._worth_it()  # a few pages: left in the WAL, as SQLite itself would
        for start in range(20, 40_020, 10_000):
            write_records(store, 10_000, start=start)
        assert judge._worth_it()  # thousands of pages: copied now
    finally:
        store.close()


def test_the_wal_index_header_is_read_only_when_its_two_copies_agree() -> None:
    header = bytearray(48)
    header[16:20] = (2500).to_bytes(4, sys.byteorder)  # frames in the WAL
    info = bytearray(40)
    info[0:4] = (1000).to_bytes(4, sys.byteorder)  # frames already copied
    assert pending_frames(bytes(header + header + info)) == 1500
    torn = bytearray(header)
    torn[16:20] = (2600).to_bytes(4, sys.byteorder)
    assert pending_frames(bytes(header + torn + info)) is None
    assert pending_frames(b"") is None
