"""A SQLite store's WAL copied into the database file by a thread of its own.

With SQLite's automatic checkpoint, the commit that crosses the threshold copies the WAL into the
database and fsyncs it, on the pull's path: a page of a pull dirties some 2,000 pages scattered over
the table, so that copy and its fsync were about 40% of a page's database time at 1,000,000 records.
Here, after a unit of work that leaves at least `MIN_FRAMES` pages in the WAL, this thread runs a
PASSIVE checkpoint (it never blocks the writer or readers), so the writer only appends to the WAL.
SQLite's own checkpoint every 10,000 pages stays as
the backstop: when this thread falls behind, the writer catches up as before, so the WAL stays as
small as it was. Durability is the same: a checkpoint is a checkpoint, whichever connection runs it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import urllib.parse

log = logging.getLogger(__name__)


# A checkpoint syncs the WAL and the database file to disk: worth it for a pull's page (thousands of
# pages), not for every small commit (an outbox item, a health row), which SQLite itself would not
# checkpoint either (its default threshold is the same 1,000 pages).
MIN_FRAMES = 1000


def pending_frames(shm: bytes) -> int | None:
    """Pages in the WAL not yet copied into the database, from the start of its `-shm` index (SQLite's
    documented wal-index format: the header, twice, then the checkpoint information); None when the
    two copies of the header differ (read while a commit rewrote them)."""
    if len(shm) < 100 or shm[:48] != shm[48:96]:
        return None
    (frames,) = struct.unpack_from("=I", shm, 16)  # mxFrame, in the machine's byte order
    (copied,) = struct.unpack_from("=I", shm, 96)  # nBackfill
    return max(int(frames) - int(copied), 0)


class WalCheckpointer:
    """Its thread starts at the first `poke` (a store only read never starts one), ends after a quiet
    `idle` (so a store left unclosed keeps no thread or connection for long) and at `close`."""

    def __init__(self, path: str, idle: float = 30.0, min_frames: int = MIN_FRAMES) -> None:
        self.path = os.path.abspath(path)  # the store's file as opened now, whatever the working folder later
        self.idle = idle
        self.min_frames = min_frames
        self.checkpoints = 0  # PASSIVE checkpoints run: for the tests and the curious
        self._wake = threading.Event()
        self._closed = False
        self._lock = threading.Lock()  # `_thread`'s start and end, and `_closed`
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def poke(self) -> None:
        """A unit of work committed: copy what it wrote, once the thread is free."""
        with self._lock:
            self._wake.set()
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=60)

    def _worth_it(self) -> bool:
        try:
            with open(f"{self.path}-shm", "rb") as index:
                pending = pending_frames(index.read(136))
        except OSError:
            return True  # no index to read: let SQLite decide (a checkpoint of nothing costs nothing)
        return pending is None or pending >= self.min_frames

    def _run(self) -> None:
        # Its own connection: a checkpoint needs one that is not inside a transaction. The store's
        # settings that matter to a checkpoint: NORMAL syncs the WAL before and the database after.
        try:
            # `mode=rw`: a store whose file is gone meanwhile is not created again, empty, by this thread.
            address = f"file:{urllib.parse.quote(self.path)}?mode=rw"
            connection = sqlite3.connect(address, timeout=0, isolation_level=None, uri=True)
            connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            log.debug("no background checkpoint of %s: %s", self.path, exc)  # the writer's own still runs
            with self._lock:
                self._thread = None
            return
        try:
            while True:
                if not self._wake.wait(self.idle):
                    with self._lock:
                        if not self._wake.is_set():  # no poke came meanwhile: end; the next starts another
                            self._thread = None
                            return
                with self._lock:
                    self._wake.clear()
                    if self._closed:
                        self._thread = None
                        return
                if not self._worth_it():
                    continue
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    # Another process's checkpoint, a file being replaced: the writer's own checkpoint
                    # still runs, so nothing is lost by skipping one here.
                    log.debug("background checkpoint of %s skipped: %s", self.path, exc)
        finally:
            connection.close()


def checkpointer_for(url_database: str | None, dialect: str) -> WalCheckpointer | None:
    """A checkpointer for a SQLite store in a file; None for PostgreSQL and in-memory databases."""
    if dialect != "sqlite" or not url_database or url_database == ":memory:" or url_database.startswith("file:"):
        return None
    return WalCheckpointer(url_database)
