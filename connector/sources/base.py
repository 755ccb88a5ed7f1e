"""The small protocol every CRM source implements; the engine knows sources only through it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from connector.sources.errors import CrmError


@dataclass(frozen=True, order=True)
class Cursor:
    """Where an incremental pull stands: every record at or before (modified_at, last_id) is done."""

    modified_at: datetime | None = None
    last_id: str | None = None


# Slots: a pull builds one per record read (in the fetching thread), and a frozen dataclass sets each
# field through object.__setattr__; slots make that a third cheaper (and the record smaller).
@dataclass(frozen=True, slots=True)
class RemoteRecord:
    id: str
    status: str | None
    modified_at: datetime
    deleted: bool = False
    converted: bool = False
    owner: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None  # when the record was created in the CRM, where the read carries it
    merged_into: str | None = None  # a deleted record merged away: the id of the record that won


@dataclass(frozen=True)
class Page:
    records: Sequence[RemoteRecord]
    cursor: Cursor  # commit this with the page's records


@dataclass(frozen=True)
class RemoteEvent:
    record_id: str  # the synced record the activity belongs to
    type: str  # an activity event name from the mapping vocabulary
    at: datetime
    key: str  # unique per activity in the CRM, so the same one twice is ignored


@dataclass(frozen=True)
class EventPage:
    events: Sequence[RemoteEvent]
    cursor: Cursor


@dataclass(frozen=True)
class StatusWrite:
    record_id: str
    status: str
    owner: str | None = None
    previous_status: str | None = None  # what we believe the CRM holds (for HubSpot's lifecycle rule)


@dataclass(frozen=True)
class WriteOutcome:
    record_id: str
    error: CrmError | None = None  # None: the CRM confirmed the write
    modified_at: datetime | None = None  # the CRM's modified stamp after our write, where it answers one

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PicklistValue:
    value: str
    label: str
    active: bool = True
    order: int = 0
    converted: bool = False  # Salesforce LeadStatus.IsConverted: a hint for `mapping init`


@dataclass(frozen=True)
class FieldInfo:
    exists: bool
    is_picklist: bool
    values: tuple[PicklistValue, ...] = ()
    type: str | None = None


@dataclass(frozen=True)
class ApiUsage:
    used: int | None = None
    limit: int | None = None
    calls: int = 0  # calls this process made


class Source(Protocol):
    """One CRM connection. Batch sizes and paging are the source's business; the engine sees pages."""

    name: str

    def pull(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[Page]:
        """Records modified after `cursor` (minus the lookback) and not after `until`, in cursor order."""
        ...

    def pull_all(self, obj: str) -> Iterator[Page]:
        """Every record, for reconcile and resync --full."""
        ...

    def pull_events(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[EventPage]:
        """Activity on the object's records after `cursor`."""
        ...

    def read_statuses(self, obj: str, record_ids: Sequence[str]) -> dict[str, RemoteRecord]:
        """Current values of these records (batched); missing ids are absent from the result."""
        ...

    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        """Write in batches; one outcome per write, in order. Raises only for whole-call failures."""
        ...

    def status_changed_at(self, obj: str, record_ids: Sequence[str]) -> dict[str, datetime]:
        """When each record's status last changed, where the CRM keeps that (field history); batched.

        Used once, for `enroll_existing` on an object's first sync; ids the CRM keeps no date for are absent.
        """
        ...

    def describe_field(self, obj: str, field: str | None = None) -> FieldInfo:
        """The object's status field, or the named field (the fields criteria triggers read)."""
        ...

    def usage(self) -> ApiUsage:
        ...

    def check_usage(self, obj: str) -> ApiUsage:
        """One cheap call whose answer states the account's API usage: a paused source asks before
        it keeps waiting. Raises `SourcePaused` when the CRM still refuses."""
        ...

    def close(self) -> None:
        ...
