"""Honest dry runs: the real code, on a copy of the store that is thrown away, with writes to the CRM held back.

A preview computed by a second code path drifts from what the real run does (a resync preview once
said "would change 0" where the real run then repaired 39). So a dry run runs the very same cycle or
resync: against a throwaway copy of the store (SQLite: a copy of the file; PostgreSQL: one
transaction that is rolled back) and with sources whose `write_statuses` records the writes and
answers as the CRM would on success, instead of sending them. Reads still go to the CRM. What the
copy recorded (transitions, queued write-backs) is what the real run would record.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from connector.engine import Engine
from connector.sources.base import Source, StatusWrite, WriteOutcome
from connector.store.db import Store, open_store
from connector.store.schema import OutboxItem, Record, TransitionRow


@dataclass
class HeldWrites:
    """A source whose writes are recorded, not sent; everything else goes to the CRM."""

    source: Source
    writes: list[tuple[str, StatusWrite]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        self.writes.extend((obj, write) for write in writes)
        return [WriteOutcome(write.record_id) for write in writes]


@dataclass(frozen=True)
class Move:
    source: str
    object: str
    id: str
    from_stage: str | None
    to_stage: str | None
    cause: str
    rule: str | None
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "from": self.from_stage, "to": self.to_stage, "cause": self.cause, "rule": self.rule}


@dataclass
class DryRun:
    """The throwaway engine, and what it did once the work is over (`moves`, `writes`, `queued`)."""

    engine: Engine
    held: dict[str, HeldWrites]
    first_transition: int
    pending_before: frozenset[tuple[int, int]]  # (outbox id, version) waiting before the run

    def moves(self) -> list[Move]:
        """Every move recorded on the copy (suppressed triggers and same-stage entries are not moves)."""
        return moves_since(self.engine.store, self.first_transition)

    def writes(self, source: str, obj: str) -> list[StatusWrite]:
        """What would have been sent to the CRM."""
        held = self.held.get(source)
        return [write for o, write in held.writes if o == obj] if held else []

    def queued(self, source: str, obj: str) -> list[tuple[str, str]]:
        """Write-backs queued on the copy and still waiting (not sent by this run): (id, status)."""
        return sorted(
            (external_id, status)
            for (item, version), (src, o, external_id, status) in _pending(self.engine.store).items()
            if (src, o) == (source, obj) and (item, version) not in self.pending_before
        )


def _pending(store: Store) -> dict[tuple[int, int], tuple[str, str, str, str]]:
    with store.transaction() as session:
        rows = session.execute(
            select(
                OutboxItem.id,
                OutboxItem.version,
                OutboxItem.source,
                OutboxItem.object,
                OutboxItem.external_id,
                OutboxItem.status,
            ).where(OutboxItem.state == "pending")
        )
        return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}


def moves_since(store: Store, first_transition: int) -> list[Move]:
    """The moves recorded from transition id `first_transition` on, in order."""
    with store.transaction() as session:
        rows = session.execute(
            select(Record.source, Record.object, Record.external_id, TransitionRow)
            .join(Record, Record.id == TransitionRow.record_id)
            .where(TransitionRow.id >= first_transition, ~TransitionRow.suppressed)
            .order_by(TransitionRow.id)
        )
        return [
            Move(src, obj, ext, t.from_stage, t.to_stage, t.cause, t.rule, t.reason or t.detail)
            for src, obj, ext, t in rows
            if t.from_stage != t.to_stage
        ]


def next_transition(store: Store) -> int:
    with store.transaction() as session:
        return int(session.execute(select(func.coalesce(func.max(TransitionRow.id), 0))).scalar_one()) + 1


@contextmanager
def _throwaway_store(store: Store) -> Iterator[Store]:
    if store.dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="connector-dry-run-") as folder:
            copy = Path(folder) / "copy.db"
            source_path = store.engine.url.database
            with sqlite3.connect(f"file:{source_path}?mode=ro", uri=True) as original, sqlite3.connect(copy) as target:
                original.backup(target)
            throwaway = open_store(f"sqlite:///{copy}")
            try:
                yield throwaway
            finally:
                throwaway.close()
        return
    # PostgreSQL: one connection, one transaction that is never committed; each unit of work is a
    # savepoint inside it, so the run sees its own writes and nobody else ever does.
    with store.engine.connect() as connection:
        outer = connection.begin()
        throwaway = Store(store.engine)
        throwaway._sessions = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        try:
            yield throwaway
        finally:
            outer.rollback()


@contextmanager
def dry_run(engine: Engine) -> Iterator[DryRun]:
    """An engine like `engine` whose store changes are thrown away and whose writes are held back."""
    with _throwaway_store(engine.store) as store:
        held = {name: HeldWrites(source) for name, source in engine.sources.items()}
        copy = Engine(engine.config, store, dict(held))
        copy.clock = engine.clock
        yield DryRun(copy, held, next_transition(store), frozenset(_pending(store)))
