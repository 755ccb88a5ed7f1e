"""Who may do what when several daemons share a database.

PostgreSQL: each source/object's pull, activity and timers run under an advisory lock, so two
daemons never decide about the same records at once (the outbox needs none: items are claimed with
FOR UPDATE SKIP LOCKED). SQLite: one daemon per database file, held by an OS file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, text

from connector.errors import ConnectorError


class AlreadyRunning(ConnectorError):
    pass


def _key(name: str) -> int:
    # A stable signed 64-bit key, the type pg_try_advisory_lock takes.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def object_lock(engine: Engine, source: str, obj: str) -> Iterator[bool]:
    """Yields True when this process holds the lock for (source, object); False: another daemon does."""
    if engine.dialect.name != "postgresql":
        yield True  # one daemon per SQLite file: nothing to share
        return
    key = _key(f"connector:{source}:{obj}")
    with engine.connect() as connection:
        held = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        try:
            yield held
        finally:
            if held:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            connection.commit()


class DaemonLock:
    """One daemon per SQLite database: a second one refuses to start, saying why and what to do."""

    def __init__(self, engine: Engine) -> None:
        self.path: Path | None = None
        self._file: IO[str] | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self.path = Path(database).with_name(Path(database).name + ".daemon.lock")

    def acquire(self) -> None:
        if self.path is None:
            return
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"another connector daemon (pid {holder}) is already running on {self.path.with_suffix('')}. "
                "SQLite allows one daemon per database file: stop the other one, or use PostgreSQL "
                "(database: postgresql+psycopg://...) to run several daemons side by side."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
