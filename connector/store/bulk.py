"""The page-sized writes of the sync's hot path, as driver SQL with values already in the database's form.

Every page of a pull upserts up to 2,000 records and their history. Through SQLAlchemy's typed
statements that cost more CPU than the database's own work: a bind processor per value per row, a
dict per row, parameter processing per batch. Here each value is converted once (timestamps to
SQLite's text or left aware for PostgreSQL, JSON dumped once, booleans as they are) and handed to the
driver in one call:

- SQLite: the driver's `executemany`, which prepares the statement once and binds row by row in C;
- PostgreSQL: one statement per page over `unnest` of one array per column, so the server plans
  once and the rows travel in a single round trip; new records' ids come back with `RETURNING`. Arrays
  of text go in psycopg's binary format (`%b`): its text format quotes every element through a regular
  expression, which cost several times the server's work on the page. Arrays of ids and booleans go
  as one array literal formatted here (`pg_array`): the driver dumps a list element by element in
  Python, about half a microsecond each, where the server parses the literal in C at less. Instants
  stay binary (the server's parsing of their text costs more than the dump), and so does text (the
  CRM's ids and statuses): it would need quoting.

The rows written are exactly what the typed statements wrote, so everything reading them through
SQLAlchemy (reports, the ORM, the tests) sees no difference. SQL NULL stands for "no fields" where the
typed JSON column wrote the JSON text `null`; both read back as None.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from connector.rules import Transition
    from connector.store.repo import RecordWrite

# The columns a record write sets, in the order of the value tuples below.
RECORD_COLUMNS = (
    "stage",
    "set_by",
    "remote_status",
    "stage_entered_at",
    "last_activity_at",
    "quarantined",
    "inactive_decided_at",
    "next_timer_at",
    "owner",
    "fields",
    "deleted",
    "converted",
    "remote_modified_at",
    "merged_into",
    "updated_at",
)
_PG_RECORD_TYPES = (
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
    "json",
    "boolean",
    "boolean",
    "timestamptz",
    "text",
    "timestamptz",
)
TRANSITION_COLUMNS = (
    "record_id", "at", "from_stage", "to_stage", "cause", "detail", "rule", "suppressed", "reason", "owner"
)
# Ids per `IN (...)` on SQLite: well under its bound-parameter limit.
_SQLITE_CHUNK = 500
_PG_TRANSITION_TYPES = ("bigint", "timestamptz", "text", "text", "text", "text", "text", "boolean", "text", "text")


def _naive(value: datetime) -> datetime:
    raise ValueError(f"naive datetime {value!r} given to the store; pass an aware UTC instant")


def sqlite_time(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text for an aware instant: 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        _naive(value)
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the '+00:00'


def pg_time(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        _naive(value)
    return value


def _pg_boolean(value: bool | None) -> str:
    return "NULL" if value is None else ("t" if value else "f")


def _pg_bigint(value: int | None) -> str:
    return "NULL" if value is None else str(int(value))


def _pg_tid(value: str) -> str:
    return f'"{value}"'  # a row's address as PostgreSQL wrote it, '(block,offset)': quoted for its comma


# Instants stay in binary lists: the server parses a timestamp's text at a greater cost (measured: an
# update of 2,000 stamps took 27 ms from a literal, 22 ms from a binary array) than the driver's dump.
_PG_ELEMENTS: dict[str, Callable[[Any], str]] = {"bigint": _pg_bigint, "boolean": _pg_boolean, "tid": _pg_tid}


def pg_array(values: Iterable[Any], kind: str) -> str:
    """A PostgreSQL array literal of `kind` (bigint, boolean or tid; elements may be None but for tid).
    None of these elements' texts holds a brace, quote or space, nor a comma but for a tid, which is
    quoted."""
    return "{" + ",".join(map(_PG_ELEMENTS[kind], values)) + "}"


def _pg_ids(values: Iterable[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _pg_arrays(kinds: Sequence[str], columns: Sequence[list[Any]]) -> tuple[str, list[Any]]:
    """Placeholders (`%s::kind[]` for a literal, `%b::kind[]` for a list) and their values, column by column."""
    marks: list[str] = []
    values: list[Any] = []
    for kind, column in zip(kinds, columns, strict=True):
        if kind in _PG_ELEMENTS:
            marks.append(f"%s::{kind}[]")
            values.append(pg_array(column, kind))
        else:
            marks.append(f"%b::{kind}[]")
            values.append(column)
    return ", ".join(marks), values


def _dumps(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


class Writer:
    """Bulk writes on one connection, in its dialect."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"
        self.time: Callable[[datetime | None], Any] = pg_time if self.postgres else self._sqlite_time
        # A page's timestamps repeat (one modified stamp for a whole import, `now` on every row): each is
        # converted once.
        self._texts: dict[datetime, str | None] = {}

    def _sqlite_time(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        text = self._texts.get(value)
        if text is None:
            text = self._texts[value] = sqlite_time(value)
        return text

    def _record_row(self, write: RecordWrite, updated_at: Any) -> tuple[Any, ...]:
        state, time = write.state, self.time
        return (
            state.stage,
            state.set_by.value if state.set_by else None,
            state.remote_status,
            time(state.stage_entered_at),
            time(state.last_activity_at),
            state.quarantined,
            time(state.inactive_decided_at),
            time(write.next_timer_at),
            write.owner,
            _dumps(write.fields),
            write.deleted,
            write.converted,
            time(write.remote_modified_at),
            write.merged_into,
            updated_at,
        )

    def insert_records(self, source: str, obj: str, writes: Sequence[RecordWrite], now: datetime) -> dict[str, int]:
        """Upsert records not yet known (by source, object, external id); external id -> row id."""
        updated_at = self.time(now)
        rows = [(w.external_id, *self._record_row(w, updated_at)) for w in writes]
        columns = ("external_id", *RECORD_COLUMNS)
        updates = ", ".join(f"{name} = excluded.{name}" for name in RECORD_COLUMNS)
        conflict = f"ON CONFLICT (source, object, external_id) DO UPDATE SET {updates}"
        if self.postgres:
            arrays, values = _pg_arrays(("text", *_PG_RECORD_TYPES), _columns(rows, len(columns)))
            sql = (
                f"INSERT INTO records (source, object, {', '.join(columns)}) "
                f"SELECT %s, %s, * FROM unnest({arrays}) {conflict} RETURNING external_id, id"
            )
            result = self.connection.exec_driver_sql(sql, (source, obj, *values))
            return {external_id: id_ for external_id, id_ in result}
        marks = ", ".join("?" * (len(columns) + 2))
        insert = f"INSERT INTO records (source, object, {', '.join(columns)}) VALUES ({marks})"
        values = [(source, obj, *row) for row in rows]
        # A plain insert first: SQLite's upsert costs a third more per row, and these records were not in
        # the store when the page was read. Should one be there after all (another writer, or the same
        # record twice in a page), the upsert runs for them all: rows the first attempt inserted are
        # written again with the same values. The driver's own cursor: a refused row leaves the
        # transaction as it was.
        cursor = self.connection.connection.cursor()
        try:
            cursor.executemany(insert, values)
        except sqlite3.IntegrityError:
            cursor.executemany(f"{insert} {conflict}", values)
        finally:
            cursor.close()
        return {}  # SQLite's executemany returns no rows: the caller reads the ids back

    def lock_records(self, record_ids: Sequence[int], ctids: Mapping[int, str] | None = None) -> dict[int, str]:
        """PostgreSQL: lock these record rows in id order (the lock order everywhere), before updating them.

        The updates below join on `unnest`, which may visit rows in any order. SQLite needs nothing: a
        write transaction holds the whole file.

        `ctids`: where the page's read found the rows (`repo.load_rows`). With all of them known the rows
        are reached by their address instead of a probe of the primary key (a third of the lock's cost);
        matching the id too keeps it from locking another row should one have taken a freed address. A row
        another transaction updated since the read is not at its address any more: those few are locked
        by id afterwards (outside the id order: a deadlock this rare race may cause is detected by the
        server and the page run again, like any other).

        Returns id -> address of each locked row. A row locked by this transaction stays at its address
        until this transaction updates it: the updates use them (`_update`).
        """
        if not self.postgres or not record_ids:
            return {}
        ids = sorted(set(record_ids))
        located: dict[int, str] = {}
        if ctids and all(i in ctids for i in ids):
            found = self.connection.exec_driver_sql(
                "SELECT r.id, r.ctid::text FROM unnest(%s::tid[], %s::bigint[]) AS v(tid, id) "
                "JOIN records r ON r.ctid = v.tid AND r.id = v.id ORDER BY r.id FOR UPDATE OF r",
                (pg_array((ctids[i] for i in ids), "tid"), _pg_ids(ids)),
            )
            located.update((id_, tid) for id_, tid in found)
        missing = [i for i in ids if i not in located]
        if missing:
            found = self.connection.exec_driver_sql(
                "SELECT id, ctid::text FROM records WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE",
                (_pg_ids(missing),),
            )
            located.update((id_, tid) for id_, tid in found)
        return located

    def _update(
        self,
        assignments: str,
        params: tuple[Any, ...],
        names: Sequence[str],
        kinds: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        located: Mapping[int, str],
    ) -> None:
        """PostgreSQL: UPDATE records from `rows` (id first, then a value per name after the first).

        By the rows' addresses when `lock_records` gave them all: no probe of the primary key. Should
        fewer rows match (the same record twice in the writes, whose first update moved it), the whole
        update runs again by id: it writes the same values.
        """
        columns = _columns(rows, len(kinds))
        tids = [located.get(row[0]) for row in rows]
        if rows and all(tids):
            arrays, values = _pg_arrays(("tid", *kinds), [tids, *columns])
            result = self.connection.exec_driver_sql(
                f"UPDATE records SET {assignments} FROM unnest({arrays}) AS v(tid, {', '.join(names)}) "
                "WHERE records.ctid = v.tid AND records.id = v.id",
                (*params, *values),
            )
            if result.rowcount == len(rows):
                return
        arrays, values = _pg_arrays(kinds, columns)
        self.connection.exec_driver_sql(
            f"UPDATE records SET {assignments} FROM unnest({arrays}) AS v({', '.join(names)}) WHERE records.id = v.id",
            (*params, *values),
        )

    def update_records(
        self, writes: Sequence[RecordWrite], now: datetime, located: Mapping[int, str] | None = None
    ) -> None:
        """Update known records by row id, in id order; on PostgreSQL after `lock_records`, at the addresses
        it returned."""
        updated_at = self.time(now)
        rows = sorted((w.record_id, *self._record_row(w, updated_at)) for w in writes)
        if self.postgres:
            assignments = ", ".join(f"{name} = v.{name}" for name in RECORD_COLUMNS)
            kinds = ("bigint", *_PG_RECORD_TYPES)
            self._update(assignments, (), ("id", *RECORD_COLUMNS), kinds, rows, located or {})
            return
        assignments = ", ".join(f"{name} = ?" for name in RECORD_COLUMNS)
        self.connection.exec_driver_sql(
            f"UPDATE records SET {assignments} WHERE id = ?", [(*row[1:], row[0]) for row in rows]
        )

    def update_stamps(
        self, stamps: Sequence[tuple[int, datetime]], now: datetime, located: Mapping[int, str] | None = None
    ) -> None:
        """Only the CRM's modified stamp (and `updated_at`) of these records, in id order.

        Two columns instead of fifteen, and none of them indexed: SQLite then leaves the indexes on
        stage and timer alone, and PostgreSQL can update the row in place (a HOT update).
        """
        updated_at = self.time(now)
        rows = sorted(stamps)
        if self.postgres:
            self._update(
                "remote_modified_at = v.stamp, updated_at = %s", (updated_at,), ("id", "stamp"),
                ("bigint", "timestamptz"), [(record_id, pg_time(stamp)) for record_id, stamp in rows], located or {},
            )
            return
        self.connection.exec_driver_sql(
            "UPDATE records SET remote_modified_at = ?, updated_at = ? WHERE id = ?",
            [(self._sqlite_time(stamp), updated_at, record_id) for record_id, stamp in rows],
        )

    def cancel_pending(self, record_ids: Sequence[int], now: datetime, reason: str | None) -> None:
        """Pending outbox items of these records become cancelled (a newer version for the drain's check)."""
        sql = (
            "UPDATE outbox SET state = 'cancelled', updated_at = {mark}, last_error = {mark}, version = version + 1 "
            "WHERE state = 'pending' AND record_id {match}"
        )
        if self.postgres:
            statement = sql.format(mark="%s", match="= ANY(%s::bigint[])")
            self.connection.exec_driver_sql(statement, (self.time(now), reason, _pg_ids(record_ids)))
            return
        for start in range(0, len(record_ids), _SQLITE_CHUNK):
            chunk = record_ids[start : start + _SQLITE_CHUNK]
            statement = sql.format(mark="?", match=f"IN ({', '.join('?' * len(chunk))})")
            self.connection.exec_driver_sql(statement, (self.time(now), reason, *chunk))

    def insert_transitions(self, rows: Sequence[tuple[int, Transition]]) -> None:
        time = self.time
        values = [
            (rid, time(t.at), t.from_stage, t.to_stage, t.cause.value, t.detail, t.rule, t.suppressed, t.reason,
             t.owner)
            for rid, t in rows
        ]
        names = ", ".join(TRANSITION_COLUMNS)
        if self.postgres:
            arrays, columns = _pg_arrays(_PG_TRANSITION_TYPES, _columns(values, len(TRANSITION_COLUMNS)))
            self.connection.exec_driver_sql(
                f"INSERT INTO transitions ({names}) SELECT * FROM unnest({arrays})", tuple(columns)
            )
            return
        marks = ", ".join("?" * len(TRANSITION_COLUMNS))
        self.connection.exec_driver_sql(f"INSERT INTO transitions ({names}) VALUES ({marks})", values)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column (PostgreSQL's arrays for `unnest`)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
