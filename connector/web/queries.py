"""The health page's own small read-only queries: dead letters, quarantine groups, recent moves, health facts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector.store.schema import OutboxItem, Record, SourceHealth, TransitionRow

DEAD_SHOWN = 50  # dead letters listed per object; the count and `outbox retry --dead` cover the rest
SAMPLE_IDS = 5  # record ids shown per unmapped status
MOVES_SHOWN = 30


@dataclass(frozen=True)
class DeadLetter:
    id: str
    status: str
    error: str | None
    attempts: int
    at: datetime


@dataclass(frozen=True)
class QuarantineGroup:
    status: str
    count: int
    ids: list[str]


@dataclass(frozen=True)
class RecentMove:
    at: datetime
    id: str
    from_stage: str | None
    to_stage: str | None
    cause: str
    detail: str
    rule: str | None
    suppressed: bool
    reason: str | None


@dataclass(frozen=True)
class HealthFacts:
    """What `status` does not (yet) report: the degraded and paused-for-the-admin columns of migration 0003."""

    activity_error: str | None
    activity_error_at: datetime | None
    writeback_error: str | None
    writeback_error_at: datetime | None
    consecutive_failures: int


def dead_letters(session: Session, source: str, obj: str, limit: int = DEAD_SHOWN) -> list[DeadLetter]:
    o = OutboxItem
    rows = session.execute(
        select(o.external_id, o.status, o.last_error, o.attempts, o.updated_at)
        .where(o.source == source, o.object == obj, o.state == "dead")
        .order_by(o.updated_at.desc(), o.id.desc())
        .limit(limit)
    )
    return [DeadLetter(r.external_id, r.status, r.last_error, r.attempts, r.updated_at) for r in rows]


def quarantine_groups(session: Session, source: str, obj: str) -> list[QuarantineGroup]:
    r = Record
    where = (r.source == source, r.object == obj, r.quarantined.is_not(None), ~r.deleted)
    counts = session.execute(
        select(r.quarantined, func.count()).where(*where).group_by(r.quarantined).order_by(func.count().desc())
    ).all()
    groups = []
    for status, count in counts:
        ids = session.scalars(
            select(r.external_id).where(*where, r.quarantined == status).order_by(r.external_id).limit(SAMPLE_IDS)
        )
        groups.append(QuarantineGroup(status or "", int(count), list(ids)))
    return groups


def recent_moves(session: Session, source: str, obj: str, limit: int = MOVES_SHOWN) -> list[RecentMove]:
    t, r = TransitionRow, Record
    rows = session.execute(
        select(t.at, r.external_id, t.from_stage, t.to_stage, t.cause, t.detail, t.rule, t.suppressed, t.reason)
        .join(r, r.id == t.record_id)
        .where(r.source == source, r.object == obj)
        .order_by(t.id.desc())
        .limit(limit)
    )
    return [
        RecentMove(
            x.at, x.external_id, x.from_stage, x.to_stage, x.cause, x.detail, x.rule, bool(x.suppressed), x.reason
        )
        for x in rows
    ]


def health_facts(session: Session, source: str, obj: str) -> HealthFacts | None:
    row = session.get(SourceHealth, (source, obj))
    if row is None:
        return None
    return HealthFacts(
        row.activity_error,
        row.activity_error_at,
        row.writeback_error,
        row.writeback_error_at,
        row.consecutive_failures or 0,
    )
