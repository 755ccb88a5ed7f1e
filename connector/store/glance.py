"""Reading the store without the ORM: the few plain queries `connector status` runs.

`status` is run by people and by monitoring scripts, often, and must answer at once. The ORM, the
engine and the rules take longer to import than `status` takes to run, and on SQLite so does
SQLAlchemy itself: a SQLite file already at the schema's head is read with the standard library's
sqlite3; any other store (PostgreSQL, a URL with options, a file to create or migrate) is opened as
every command opens it (`open_store`, which migrates) and read through SQLAlchemy Core. Both run the
same SQL, with `:name` parameters, in one read transaction (one consistent snapshot).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from connector.store.revision import head_from_files

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from connector.store.db import Store

Row = tuple[Any, ...]
# A plain file path and nothing else: SQLAlchemy's URL rules (query options, drivers) are its own.
_PLAIN_SQLITE = re.compile(r"^sqlite:///(/[^?#]+)$")


class Glance(Protocol):
    def rows(self, sql: str, params: Mapping[str, object]) -> list[Row]: ...

    def close(self) -> None: ...


class SqliteGlance:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._connection.execute("BEGIN")  # one snapshot for every query, as a unit of work would read

    def rows(self, sql: str, params: Mapping[str, object]) -> list[Row]:
        return list(self._connection.execute(sql, dict(params)).fetchall())

    def close(self) -> None:
        self._connection.rollback()
        self._connection.close()


class CoreGlance:
    """SQLAlchemy Core on an engine; `store` (when given) is closed with it."""

    def __init__(self, engine: Engine, store: Store | None = None) -> None:
        self._store = store
        self._connection: Connection = engine.connect()  # autobegins: one snapshot

    def rows(self, sql: str, params: Mapping[str, object]) -> list[Row]:
        from sqlalchemy import text

        return [tuple(row) for row in self._connection.execute(text(sql), dict(params))]

    def close(self) -> None:
        self._connection.close()
        if self._store is not None:
            self._store.close()


def _at_head(connection: sqlite3.Connection) -> bool:
    head = head_from_files()
    try:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return head is not None and found == [(head,)]


def open_glance(url: str) -> Glance:
    """A read-only view of the store at `url`, migrated first if it is not at head (as any command)."""
    match = _PLAIN_SQLITE.match(url)
    if match and Path(match.group(1)).is_file():
        connection = sqlite3.connect(match.group(1), timeout=30, isolation_level=None)
        connection.execute("PRAGMA busy_timeout=30000")  # a daemon writing meanwhile: wait, as the store does
        if _at_head(connection):
            return SqliteGlance(connection)
        connection.close()
    from connector.store.db import open_store

    store = open_store(url)
    return CoreGlance(store.engine, store)


def instant(value: object) -> datetime | None:
    """An aware UTC instant from a column: SQLite keeps text without a zone, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not an instant: {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
