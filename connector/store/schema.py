"""The database schema. Changes go through an Alembic migration in `migrations/versions/`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; pass an aware UTC instant")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Record(Base):
    __tablename__ = "records"
    __table_args__ = (
        Index("uq_records_key", "source", "object", "external_id", unique=True),
        Index("ix_records_stage", "source", "object", "stage"),
        Index("ix_records_timer", "next_timer_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(128))
    external_id: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str | None] = mapped_column(String(255))
    set_by: Mapped[str | None] = mapped_column(String(16))
    remote_status: Mapped[str | None] = mapped_column(String(255))
    stage_entered_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime | None]
    quarantined: Mapped[str | None] = mapped_column(String(255))
    inactive_decided_at: Mapped[datetime | None]
    next_timer_at: Mapped[datetime | None]  # when the timer job must look at it next
    owner: Mapped[str | None] = mapped_column(String(64))
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # extra CRM fields, for assign rules
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    converted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    remote_modified_at: Mapped[datetime | None]  # the CRM's stamp of what we last knew (rule 5)
    merged_into: Mapped[str | None] = mapped_column(String(64))  # merged away in the CRM: the winner's id
    updated_at: Mapped[datetime]


class TransitionRow(Base):
    __tablename__ = "transitions"
    __table_args__ = (Index("ix_transitions_record", "record_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    from_stage: Mapped[str | None] = mapped_column(String(255))
    to_stage: Mapped[str | None] = mapped_column(String(255))
    cause: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(255))
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(64))


class OutboxItem(Base):
    """A status to write to the CRM. At most one pending per record: a newer one replaces it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("uq_outbox_pending", "record_id", unique=True, sqlite_where=text("state = 'pending'"),
              postgresql_where=text("state = 'pending'")),
        Index("ix_outbox_due", "source", "object", "state", "next_attempt_at"),
        Index("ix_outbox_record", "record_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(128))
    external_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # pending | done | dead | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped when a newer status replaces it
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SentWrite(Base):
    """A status we are about to send, committed before the call and removed once its outcome is known.

    A process killed after the CRM took the write but before the store confirmed it leaves one behind;
    reading that status back later is then known for ours, not a person's change, even when a newer
    stage has replaced the pending item meanwhile.
    """

    __tablename__ = "sent_writes"
    __table_args__ = (Index("ix_sent_writes_record", "record_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(255))
    sent_at: Mapped[datetime]


class CursorRow(Base):
    __tablename__ = "cursors"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    object: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # records | events
    modified_at: Mapped[datetime | None]
    last_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class EventRow(Base):
    """Activity events taken in, once each: the same event twice does nothing."""

    __tablename__ = "events"
    __table_args__ = (Index("uq_events_key", "source", "dedupe_key", unique=True),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(128))
    external_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    dedupe_key: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime]


class SourceHealth(Base):
    """The last run of each source/object, and whether it is paused: what `status` shows."""

    __tablename__ = "source_health"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    object: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_run_at: Mapped[datetime | None]
    last_outcome: Mapped[str | None] = mapped_column(String(16))  # ok | failed | paused
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    paused_until: Mapped[datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(Text)
    records_pulled: Mapped[int] = mapped_column(BigInteger, default=0)
    api_used: Mapped[int | None] = mapped_column(BigInteger)
    api_limit: Mapped[int | None] = mapped_column(BigInteger)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failed_job: Mapped[str | None] = mapped_column(String(16))  # pull | writeback: whose failure `last_error` is
    # Activity is optional: a failure to read it degrades the object without stopping it.
    activity_error: Mapped[str | None] = mapped_column(Text)
    activity_error_at: Mapped[datetime | None]
    activity_retry_at: Mapped[datetime | None]
    activity_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # A write-back refused for the configuration's sake (field unknown or read-only, no permission):
    # the object's write-back waits for the admin, the items stay pending.
    writeback_error: Mapped[str | None] = mapped_column(Text)
    writeback_error_at: Mapped[datetime | None]


class NotificationRow(Base):
    """A message to a stage owner, once per key: entering a stage, or one reminder per idle interval.

    Rows are written before anything is sent, so a restart never sends one twice; a failed send is
    retried with backoff until `attempts` runs out, then kept as `dead` with the error.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        Index("uq_notifications_key", "key", unique=True),
        Index("ix_notifications_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # enter:<transition>:<channel> | remind:<record>:<stage entry>:<interval>:<channel>
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # entered | reminder
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    transition_id: Mapped[int | None] = mapped_column(Id)
    source: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(128))
    external_id: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str | None] = mapped_column(String(255))  # the email address (webhook: none)
    reminder: Mapped[int] = mapped_column(Integer, default=0)  # the idle interval's number; 0 on entering
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # what is sent, fixed when queued
    state: Mapped[str] = mapped_column(String(16))  # pending | sent | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
