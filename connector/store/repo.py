"""Queries and bulk writes. Functions take a Session and never commit: the caller's unit of work does."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, bindparam, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connector.rules import RecordState, SetBy, Transition
from connector.store.bulk import Writer, pg_array
from connector.store.schema import CursorRow, EventRow, OutboxItem, Record, SentWrite, SourceHealth, TransitionRow

RECORDS = cast(Table, Record.__table__)
TRANSITIONS = cast(Table, TransitionRow.__table__)
OUTBOX = cast(Table, OutboxItem.__table__)
CURSORS = cast(Table, CursorRow.__table__)
EVENTS = cast(Table, EventRow.__table__)
SENT = cast(Table, SentWrite.__table__)

# Keeps one statement under SQLite's bound-parameter limit on the widest table.
CHUNK = 500


@dataclass(frozen=True)
class StoredRecord:
    id: int
    external_id: str
    state: RecordState
    owner: str | None = None
    deleted: bool = False
    converted: bool = False
    fields: dict[str, Any] | None = None
    remote_modified_at: datetime | None = None  # the CRM's stamp of what the store knows (rule 5)
    merged_into: str | None = None


@dataclass
class RecordWrite:
    """Everything one page persists for one record."""

    external_id: str
    record_id: int | None
    state: RecordState
    transitions: list[Transition] = field(default_factory=list)
    writeback: str | None = None
    cancel_writeback: bool = False
    next_timer_at: datetime | None = None
    owner: str | None = None
    fields: dict[str, Any] | None = None
    deleted: bool = False
    converted: bool = False
    remote_modified_at: datetime | None = None
    merged_into: str | None = None
    stamp_only: bool = False  # only the CRM's modified stamp is new (our own write read back): not a change
    # An owner to write back with the status (a stage's `owner` / `assign:`), not the owner read from the
    # CRM: echoing that one would undo a person's reassignment, which the status-only conflict check misses.
    assigned_owner: str | None = None


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- records -------------------------------------------------------------------------------------
_RECORD_COLUMNS = (
    "id",
    "external_id",
    "stage",
    "set_by",
    "remote_status",
    "stage_entered_at",
    "last_activity_at",
    "quarantined",
    "inactive_decided_at",
    "owner",
    "deleted",
    "converted",
    "fields",
    "remote_modified_at",
    "merged_into",
)


# SQLite's timestamp texts, parsed: a page's rows repeat the same few instants (a stage's timer, an
# import's stamp) and each row is read four or five times (`record_writes.read_back`). Bounded: emptied
# when full.
_PARSED: dict[str, datetime] = {}
_PARSED_MAX = 4096


def _utc(value: Any) -> datetime | None:
    """A timestamp from the driver: text on SQLite (stored as UTC), a datetime on PostgreSQL."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = _PARSED.get(value)
        if parsed is None:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            read = datetime.fromisoformat(value)
            parsed = _PARSED[value] = read.replace(tzinfo=UTC) if read.tzinfo is None else read.astimezone(UTC)
        return parsed
    moment: datetime = value
    if moment.tzinfo is UTC:  # PostgreSQL's (its sessions are in UTC, see `db.make_engine`)
        return moment
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stored_from_row(row: Sequence[Any]) -> StoredRecord:
    """A record from a row of `_RECORD_COLUMNS`, whether the driver or SQLAlchemy's types produced it."""
    (
        id_,
        external_id,
        stage,
        set_by,
        remote_status,
        entered,
        activity,
        quarantined_status,
        decided,
        owner,
        deleted,
        converted,
        fields,
        remote_modified_at,
        merged_into,
    ) = row[: len(_RECORD_COLUMNS)]  # rows of `ROW_COLUMNS` carry the timer after these
    state = RecordState(
        stage=stage,
        set_by=SetBy(set_by) if set_by else None,
        remote_status=remote_status,
        stage_entered_at=_utc(entered),
        last_activity_at=_utc(activity),
        quarantined=quarantined_status,
        inactive_decided_at=_utc(decided),
    )
    return StoredRecord(
        id_, external_id, state, owner, bool(deleted), bool(converted), _json(fields), _utc(remote_modified_at),
        merged_into,
    )


def _by_ids(
    session: Session, columns: Sequence[str], source: str, obj: str, external_ids: Sequence[str]
) -> Iterator[Any]:
    """Rows of `records` for these external ids, as the driver returns them.

    Plain driver SQL on these hot paths (every record of every page): SQLAlchemy's per-row processing
    cost more than the lookups themselves. Ids are sorted, so the index is walked in order.
    """
    # The DB-API cursor itself: rows as plain tuples, no result wrapping per row.
    cursor = session.connection().connection.cursor()
    try:
        if session.get_bind().dialect.name == "postgresql":
            # One array parameter: the same statement text (and plan) whatever the number of ids. A join
            # on `unnest`, not `external_id = ANY(...)`: for a page of 2,000 ids the planner took the
            # latter for a scan of the whole table; the join probes the unique index once per id.
            cursor.execute(
                f"SELECT {', '.join('r.' + c for c in columns)} FROM unnest(%b::text[]) AS k(external_id) "
                "JOIN records r ON r.source = %s AND r.object = %s AND r.external_id = k.external_id",
                (sorted(external_ids), source, obj),
            )
            yield from cursor.fetchall()
            return
        for chunk in _chunks(sorted(external_ids), 1000):
            cursor.execute(
                f"SELECT {', '.join(columns)} FROM records WHERE source = ? AND object = ? "
                f"AND external_id IN ({', '.join('?' * len(chunk))})",
                (source, obj, *chunk),
            )
            yield from cursor.fetchall()
    finally:
        cursor.close()


def _for_records(session: Session, sql: str, record_ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """Rows of `sql`, whose `{match}` ends a condition on `record_id`, for these record ids.

    Driver SQL, for the page's pending items and sent traces: SQLAlchemy compiled a new `IN` of a
    different length for every page, and the driver parsed each anew; that cost more than the lookups.
    PostgreSQL takes the ids as one array (one statement text whatever their number).
    """
    if not record_ids:
        return []
    cursor = session.connection().connection.cursor()
    try:
        if session.get_bind().dialect.name == "postgresql":
            cursor.execute(sql.format(match="= ANY(%s::bigint[])"), (pg_array(record_ids, "bigint"),))
            return list(cursor.fetchall())
        rows: list[tuple[Any, ...]] = []
        for chunk in _chunks(list(record_ids)):
            cursor.execute(sql.format(match=f"IN ({', '.join('?' * len(chunk))})"), tuple(chunk))
            rows.extend(cursor.fetchall())
        return rows
    finally:
        cursor.close()


def load_records(session: Session, source: str, obj: str, external_ids: Sequence[str]) -> dict[str, StoredRecord]:
    """Whole records by external id."""
    records = (stored_from_row(row) for row in _by_ids(session, _RECORD_COLUMNS, source, obj, external_ids))
    return {record.external_id: record for record in records}


# A page's rows as the driver returns them: `_RECORD_COLUMNS`, then `next_timer_at`. Positions for the
# readers of raw rows (`record_writes.read_back`); `stored_from_row` takes the same rows.
ROW_COLUMNS = (*_RECORD_COLUMNS, "next_timer_at")
(
    R_ID, R_EXTERNAL_ID, R_STAGE, R_SET_BY, R_REMOTE_STATUS, R_ENTERED, R_ACTIVITY, R_QUARANTINED, R_DECIDED,
    R_OWNER, R_DELETED, R_CONVERTED, R_FIELDS, R_REMOTE_MODIFIED_AT, R_MERGED_INTO, R_NEXT_TIMER_AT,
) = range(len(ROW_COLUMNS))
_R_ADDRESS = len(ROW_COLUMNS)  # the ctid after them, in `load_rows`' read on PostgreSQL


# session.info key: record id -> the row's address (ctid) as the page's read found it, PostgreSQL only.
_ADDRESSES = "connector.record_addresses"


def load_rows(session: Session, source: str, obj: str, external_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """A page's stored rows, untouched (`ROW_COLUMNS`), by external id: one read for the whole page.

    Most reads of a page change nothing or only the CRM's stamp; they are judged on these tuples, and
    only the others become `StoredRecord`s (`stored_from_row`).

    PostgreSQL: the read also returns each row's address (ctid), kept in the session for this
    transaction's `save_records`, which locks and updates the rows there instead of probing the
    primary key for each one again (see `Writer.lock_records`).
    """
    if session.get_bind().dialect.name != "postgresql":
        return {row[R_EXTERNAL_ID]: row for row in _by_ids(session, ROW_COLUMNS, source, obj, external_ids)}
    found = list(_by_ids(session, (*ROW_COLUMNS, "ctid::text"), source, obj, external_ids))
    session.info.setdefault(_ADDRESSES, {}).update((row[R_ID], row[_R_ADDRESS]) for row in found)
    return {row[R_EXTERNAL_ID]: row[:_R_ADDRESS] for row in found}


# A timestamp column as the driver returned it, as an aware UTC instant (the same function: one call
# less for each of a page's several thousand).
utc = _utc


def fields_of(value: Any) -> dict[str, Any] | None:
    """The `fields` column as the driver returned it (JSON text on SQLite)."""
    return _json(value)


class Brief(NamedTuple):
    """The columns that tell whether a record read from the CRM changes anything.

    A named tuple, not a frozen dataclass: one is built for every record of every page, and a frozen
    dataclass's `__init__` costs several times a tuple's.
    """

    remote_status: str | None
    owner: str | None
    fields: dict[str, Any] | None
    deleted: bool
    converted: bool
    remote_modified_at: datetime | None = None


def load_briefs(
    session: Session, source: str, obj: str, external_ids: Sequence[str], *, with_fields: bool = True
) -> dict[str, Brief]:
    """Cheap to read: most reads of a page are our own state coming back, and this runs for every one."""
    columns = ["external_id", "remote_status", "owner", "deleted", "converted", "remote_modified_at"]
    columns += ["fields"] if with_fields else []
    found: dict[str, Brief] = {}
    for row in _by_ids(session, columns, source, obj, external_ids):
        fields = _json(row[6]) if with_fields else None
        found[row[0]] = Brief(row[1], row[2], fields, bool(row[3]), bool(row[4]), _utc(row[5]))
    return found


def _json(value: Any) -> dict[str, Any] | None:
    # SQLite hands back JSON as text; PostgreSQL's driver has already decoded it.
    if value is None or isinstance(value, dict):
        return value
    decoded = json.loads(value)
    return decoded if isinstance(decoded, dict) else None


def external_ids(session: Session, source: str, obj: str) -> list[str]:
    return list(
        session.scalars(select(RECORDS.c.external_id).where(RECORDS.c.source == source, RECORDS.c.object == obj))
    )


def get_record(session: Session, source: str, obj: str, external_id: str) -> StoredRecord | None:
    return load_records(session, source, obj, [external_id]).get(external_id)


def due_for_timers(session: Session, source: str, obj: str, now: datetime, limit: int) -> list[StoredRecord]:
    table = RECORDS
    rows = session.execute(
        select(*(table.c[name] for name in _RECORD_COLUMNS))
        .where(table.c.source == source, table.c.object == obj, table.c.next_timer_at <= now, ~table.c.deleted)
        .order_by(table.c.next_timer_at, table.c.id)
        .limit(limit)
    )
    return [stored_from_row(row) for row in rows]


def save_records(
    session: Session,
    source: str,
    obj: str,
    writes: Sequence[RecordWrite],
    now: datetime,
    stamps: Sequence[tuple[int, datetime]] = (),
) -> None:
    """Upsert the records, their history and outbox changes: a handful of statements per page.

    `stamps` are (record id, the CRM's new modified stamp) of records a read left as they were apart
    from that stamp (see `record_writes.read_back`): only the stamp and `updated_at` are written.

    Lock order is the same everywhere: outbox rows before record rows, each in id order. The drain
    holds outbox rows while it sends and then updates records; a pull doing the reverse would deadlock.
    """
    new = [w for w in writes if w.record_id is None]
    existing = [w for w in writes if w.record_id is not None]
    writer = Writer(session.connection())
    if new:
        ids = writer.insert_records(source, obj, new, now)
        if len(ids) < len(new):
            found = _by_ids(session, ("external_id", "id"), source, obj, [w.external_id for w in new])
            ids = {row[0]: row[1] for row in found}
        for write in new:
            write.record_id = ids[write.external_id]
    cancel_writebacks(
        session, sorted(w.record_id for w in writes if w.cancel_writeback and w.record_id and not w.merged_into), now
    )
    for write in writes:
        if write.cancel_writeback and write.record_id and write.merged_into:
            # Merges are rare: the reason goes with the item, for `outbox` and `explain`.
            reason = f"the record was merged into {write.merged_into} in the CRM; this write was not re-targeted"
            cancel_writebacks(session, [write.record_id], now, reason)
    queue_writebacks(
        session,
        source,
        obj,
        sorted(
            (w.record_id, w.external_id, w.writeback, w.assigned_owner) for w in writes if w.writeback and w.record_id
        ),
        now,
    )
    # Every record row this page updates is locked at once, in id order (PostgreSQL; SQLite locks the file).
    # The addresses the read found serve once: the updates below move the rows.
    located = writer.lock_records(
        sorted([w.record_id for w in existing if w.record_id is not None] + [s[0] for s in stamps]),
        session.info.pop(_ADDRESSES, None),
    )
    if existing:
        writer.update_records(existing, now, located)
    if stamps:
        writer.update_stamps(stamps, now, located)
    _save_transitions(session, writes, writer)


def _save_transitions(session: Session, writes: Sequence[RecordWrite], writer: Writer | None = None) -> None:
    rows = [(w.record_id, t) for w in writes if w.record_id is not None for t in w.transitions]
    if rows:
        (writer or Writer(session.connection())).insert_transitions(rows)


def history(session: Session, record_id: int) -> list[TransitionRow]:
    return list(
        session.scalars(select(TransitionRow).where(TransitionRow.record_id == record_id).order_by(TransitionRow.id))
    )


def closest_external_ids(session: Session, source: str, obj: str, external_id: str, limit: int = 3) -> list[str]:
    """Ids that share the longest prefix with a mistyped one, for a did-you-mean."""
    table = RECORDS
    for length in range(len(external_id) - 1, 2, -1):
        rows = session.execute(
            select(table.c.external_id)
            .where(table.c.source == source, table.c.object == obj)
            .where(table.c.external_id.like(external_id[:length] + "%"))
            .limit(limit)
        ).scalars()
        found = list(rows)
        if found:
            return found
    return []


# --- outbox --------------------------------------------------------------------------------------
def queue_writebacks(
    session: Session, source: str, obj: str, items: Sequence[tuple[int, str, str, str | None]], now: datetime
) -> None:
    """Queue (record id, external id, status, owner); a newer status replaces a pending one."""
    table = OUTBOX
    rows = [
        {
            "record_id": record_id,
            "source": source,
            "object": obj,
            "external_id": external_id,
            "status": status,
            "owner": owner,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": None,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for record_id, external_id, status, owner in items
    ]
    if not rows:
        return
    # One statement for many rows (see save_records): compiled once, batched by SQLAlchemy.
    stmt = _insert(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["record_id"],
        index_where=text("state = 'pending'"),
        set_={
            "status": stmt.excluded.status,
            # A newer status without an owner keeps the owner assignment still waiting to go out.
            "owner": func.coalesce(stmt.excluded.owner, table.c.owner),
            "attempts": 0,
            "next_attempt_at": stmt.excluded.next_attempt_at,
            "last_error": None,
            "version": table.c.version + 1,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    session.execute(stmt, rows)


def cancel_writebacks(session: Session, record_ids: Sequence[int], now: datetime, reason: str | None = None) -> None:
    """Cancel the pending items of these records (a page asks this for many records that have none)."""
    if record_ids:
        Writer(session.connection()).cancel_pending(record_ids, now, reason)


def claim_due(session: Session, source: str, obj: str, now: datetime, limit: int) -> list[OutboxItem]:
    """Pending items due now, oldest first; on PostgreSQL locked by this transaction, skipping others' claims."""
    stmt = (
        select(OutboxItem)
        .where(
            OutboxItem.source == source,
            OutboxItem.object == obj,
            OutboxItem.state == "pending",
            OutboxItem.next_attempt_at <= now,
        )
        .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def pending_writebacks(session: Session, record_ids: Sequence[int]) -> dict[int, tuple[int, int, str]]:
    """record id -> (item id, version, status) of its pending outbox item, for the records that have one."""
    rows = _for_records(
        session, "SELECT record_id, id, version, status FROM outbox WHERE state = 'pending' AND record_id {match}",
        record_ids,
    )
    return {record_id: (id_, version, status) for record_id, id_, version, status in rows}


def outbox_counts(session: Session, source: str, obj: str) -> dict[str, int]:
    table = OUTBOX
    rows = session.execute(
        select(table.c.state, func.count())
        .where(table.c.source == source, table.c.object == obj)
        .group_by(table.c.state)
    )
    return {state: count for state, count in rows}


def finish_item(
    session: Session, item_id: int, version: int, state: str, now: datetime, error: str | None = None
) -> bool:
    """Close an item, unless a newer status replaced it meanwhile (then it stays pending, to be sent).

    A dead letter counts the attempt that the CRM refused, so `outbox` shows how often it was tried."""
    table = OUTBOX
    attempts = table.c.attempts + 1 if state == "dead" else table.c.attempts
    result = session.execute(
        update(table)
        .where(table.c.id == item_id, table.c.version == version, table.c.state == "pending")
        .values(state=state, updated_at=now, last_error=error, attempts=attempts)
    )
    return bool(getattr(result, "rowcount", 0))


def finish_items(
    session: Session, items: Sequence[tuple[int, int]], state: str, now: datetime, error: str | None = None
) -> int:
    """`finish_item` for many (id, version) pairs in one executemany; how many were still pending."""
    if not items:
        return 0
    table = OUTBOX
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version"), table.c.state == "pending")
        .values(state=state, updated_at=now, last_error=error)
    )
    result = session.connection().execute(stmt, [{"b_id": i, "b_version": v} for i, v in items])
    return int(getattr(result, "rowcount", 0) or 0)


# --- sent, not yet confirmed ---------------------------------------------------------------------
def note_sent(session: Session, writes: Sequence[tuple[int, str]], now: datetime) -> None:
    """(record id, status) pairs about to be sent: committed by the caller before the call goes out.

    A retried write is noted once: the table holds what may have landed, not how often it was tried."""
    known = sent_statuses(session, [r for r, _ in writes])
    new = [(r, s) for r, s in dict.fromkeys(writes) if s not in known.get(r, ())]
    if new:
        session.execute(SENT.insert(), [{"record_id": r, "status": s, "sent_at": now} for r, s in new])


def _statuses_by_record(session: Session, sql: str, record_ids: Sequence[int]) -> dict[int, set[str]]:
    """record id -> the statuses of the (record_id, status) rows `sql` selects for these records."""
    found: dict[int, set[str]] = {}
    for record_id, status in _for_records(session, sql, record_ids):
        found.setdefault(record_id, set()).add(status)
    return found


def sent_statuses(session: Session, record_ids: Sequence[int]) -> dict[int, set[str]]:
    """record id -> the statuses sent to the CRM for it whose outcome the store never learned."""
    return _statuses_by_record(session, "SELECT record_id, status FROM sent_writes WHERE record_id {match}", record_ids)


def forget_sent(session: Session, record_ids: Sequence[int]) -> None:
    """The CRM has told where these records stand (our write confirmed or read back, a person's status
    read): no status sent for them can still land unnoticed."""
    for chunk in _chunks(list(dict.fromkeys(record_ids))):
        session.execute(SENT.delete().where(SENT.c.record_id.in_(chunk)))


def forget_refused(session: Session, refused: Sequence[tuple[int, str]]) -> None:
    """(record id, status) pairs the CRM refused: those statuses never landed. An earlier status sent for
    the same record before a kill may have, so its trace stays."""
    for chunk in _chunks(list(dict.fromkeys(refused))):
        session.execute(SENT.delete().where(tuple_(SENT.c.record_id, SENT.c.status).in_(chunk)))


def dead_statuses(session: Session, record_ids: Sequence[int]) -> dict[int, set[str]]:
    """record id -> the statuses dead-lettered for it (refused by the CRM, waiting for the admin)."""
    return _statuses_by_record(
        session, "SELECT record_id, status FROM outbox WHERE state = 'dead' AND record_id {match}", record_ids
    )


def retry_item(session: Session, item_id: int, version: int, when: datetime, error: str, now: datetime) -> None:
    table = OUTBOX
    session.execute(
        update(table)
        .where(table.c.id == item_id, table.c.version == version, table.c.state == "pending")
        .values(attempts=table.c.attempts + 1, next_attempt_at=when, last_error=error, updated_at=now)
    )


# --- cursors -------------------------------------------------------------------------------------
def get_cursor(session: Session, source: str, obj: str, kind: str = "records") -> tuple[datetime | None, str | None]:
    row = session.get(CursorRow, (source, obj, kind))
    return (row.modified_at, row.last_id) if row else (None, None)


def save_cursor(
    session: Session,
    source: str,
    obj: str,
    modified_at: datetime | None,
    last_id: str | None,
    now: datetime,
    kind: str = "records",
) -> None:
    table = CURSORS
    stmt = _insert(session, table).values(
        source=source, object=obj, kind=kind, modified_at=modified_at, last_id=last_id, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "object", "kind"],
        set_={"modified_at": stmt.excluded.modified_at, "last_id": stmt.excluded.last_id, "updated_at": now},
    )
    session.execute(stmt)


# --- events --------------------------------------------------------------------------------------
def insert_new_events(session: Session, source: str, events: Sequence[dict[str, Any]], now: datetime) -> set[str]:
    """Insert events not seen before; return the dedupe keys that were new."""
    if not events:
        return set()
    table = EVENTS
    new: set[str] = set()
    for chunk in _chunks(list(events)):
        stmt = _insert(session, table).values([{**e, "source": source, "received_at": now} for e in chunk])
        stmt = stmt.on_conflict_do_nothing(index_elements=["source", "dedupe_key"]).returning(table.c.dedupe_key)
        new.update(session.execute(stmt).scalars())
    return new


# --- health --------------------------------------------------------------------------------------
def health(session: Session, source: str, obj: str) -> SourceHealth:
    row = session.get(SourceHealth, (source, obj))
    if row is None:
        row = SourceHealth(source=source, object=obj, records_pulled=0, consecutive_failures=0)
        session.add(row)
    return row


def stage_counts(session: Session, source: str, obj: str) -> dict[str | None, int]:
    table = RECORDS
    rows = session.execute(
        select(table.c.stage, func.count())
        .where(table.c.source == source, table.c.object == obj, ~table.c.deleted)
        .group_by(table.c.stage)
    )
    return {stage: count for stage, count in rows}


def quarantined(session: Session, source: str, obj: str, limit: int = 20) -> tuple[int, list[tuple[str, str]]]:
    table = RECORDS
    where = and_(table.c.source == source, table.c.object == obj, table.c.quarantined.is_not(None), ~table.c.deleted)
    count = session.execute(select(func.count()).where(where)).scalar_one()
    rows = session.execute(select(table.c.external_id, table.c.quarantined).where(where).limit(limit))
    return int(count), [(r.external_id, r.quarantined) for r in rows]


# --- the admin's view of the outbox (`connector outbox`) ------------------------------------------
OUTBOX_LISTED = ("pending", "dead")  # what waits or failed; done and cancelled items are history


def outbox_items(
    session: Session,
    source: str | None = None,
    obj: str | None = None,
    states: Sequence[str] = OUTBOX_LISTED,
    limit: int | None = None,
) -> list[OutboxItem]:
    """Outbox items in the given states, oldest first, optionally for one source or object."""
    stmt = select(OutboxItem).where(OutboxItem.state.in_(list(states)))
    if source is not None:
        stmt = stmt.where(OutboxItem.source == source)
    if obj is not None:
        stmt = stmt.where(OutboxItem.object == obj)
    stmt = stmt.order_by(OutboxItem.created_at, OutboxItem.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def count_outbox_items(
    session: Session, source: str | None = None, obj: str | None = None, states: Sequence[str] = OUTBOX_LISTED
) -> int:
    table = OUTBOX
    stmt = select(func.count()).select_from(table).where(table.c.state.in_(list(states)))
    if source is not None:
        stmt = stmt.where(table.c.source == source)
    if obj is not None:
        stmt = stmt.where(table.c.object == obj)
    return int(session.execute(stmt).scalar_one())


def latest_outbox_states(session: Session, source: str, obj: str, external_ids: Sequence[str]) -> dict[str, str]:
    """external id -> state of its newest outbox item, for ids that have one."""
    table = OUTBOX
    found: dict[str, str] = {}
    for chunk in _chunks(list(external_ids)):
        rows = session.execute(
            select(table.c.external_id, table.c.state)
            .where(table.c.source == source, table.c.object == obj, table.c.external_id.in_(chunk))
            .order_by(table.c.id)
        )
        found.update({row.external_id: row.state for row in rows})
    return found


@dataclass
class RetryResult:
    """What `requeue_dead` did: ids sent again, ids whose dead write was superseded by a pending one."""

    requeued: list[str] = field(default_factory=list)
    superseded: list[tuple[str, str]] = field(default_factory=list)  # (external id, the pending status)


def requeue_dead(
    session: Session, source: str, obj: str, external_ids: Sequence[str] | None, now: datetime
) -> RetryResult:
    """Make dead letters pending again, attempts reset, due now: all of the object's, or those ids'.

    Per record only the newest dead item goes out again (an older status would undo a newer one); the
    older ones are cancelled. A record that already has a pending write keeps it: its dead item is
    cancelled as superseded, since the unique pending index allows one pending item per record.
    """
    table = OUTBOX
    stmt = select(table.c.id, table.c.record_id, table.c.external_id).where(
        table.c.source == source, table.c.object == obj, table.c.state == "dead"
    )
    dead: list[Any] = []
    if external_ids is None:
        dead = list(session.execute(stmt.order_by(table.c.id)))
    else:
        for chunk in _chunks(list(external_ids)):
            dead.extend(session.execute(stmt.where(table.c.external_id.in_(chunk))))
        dead.sort(key=lambda row: row.id)
    newest = {row.record_id: row for row in dead}
    pending = pending_writebacks(session, list(newest))
    result = RetryResult()
    requeue: list[int] = []
    for record_id, row in newest.items():
        if record_id in pending:
            result.superseded.append((row.external_id, pending[record_id][2]))
        else:
            requeue.append(row.id)
            result.requeued.append(row.external_id)
    cancel = [row.id for row in dead if row.id not in set(requeue)]
    for chunk in _chunks(cancel):
        session.execute(
            update(table)
            .where(table.c.id.in_(chunk), table.c.state == "dead")
            .values(state="cancelled", updated_at=now, last_error="superseded: a newer write-back replaced it")
        )
    for chunk in _chunks(requeue):
        session.execute(
            update(table)
            .where(table.c.id.in_(chunk), table.c.state == "dead")
            .values(
                state="pending", attempts=0, next_attempt_at=now, last_error=None,
                version=table.c.version + 1, updated_at=now,
            )
        )
    return result
