"""A fake CRM at the `Source` protocol's edge that answers late, as the real ones do, for the contract model.

It keeps every version of every record and every activity, and answers:
- the incremental pulls (`pull`, `pull_events`) from a search index that lags `lag` behind, and sees an
  edit only once it committed (`committed_at`: a late commit, stamped earlier than it became visible).
  HubSpot documents that its search "may take a few moments" to show a created or updated object; a
  Salesforce transaction's SystemModstamp is taken when it starts, so it can commit behind records
  already read (why taps re-read a lookback). Pulls follow the protocol: everything after the cursor
  plus everything stamped at or after `until - settle`, in (stamp, id) order, in small pages;
- reads by id (`read_statuses`, the drain's conflict check) live, as HubSpot's batch read and a
  Salesforce query by Id do (Salesforce: only what committed);
- writes with the CRM's stamp in the answer in the HubSpot profile (its batch update returns
  `updatedAt`) and without it in the Salesforce profile (sObject Collections answer only ids). In the
  Salesforce profile a write to a record whose edit has not committed yet fails for that record with
  UNABLE_TO_LOCK_ROW, which the errors table retries.

Faults are armed one at a time and fire once. Everything the engine and the drain were given is
logged, so the reference model can replay it with its own rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connector.sources.base import (
    ApiUsage,
    Cursor,
    EventPage,
    FieldInfo,
    Page,
    RemoteEvent,
    RemoteRecord,
    StatusWrite,
    WriteOutcome,
)
from connector.sources.errors import Action, CrmError

MS = timedelta(milliseconds=1)


class Killed(Exception):
    """The process died here: nothing after this point ran, no transaction in flight committed."""


@dataclass(frozen=True)
class Version:
    status: str
    stamp: datetime
    committed_at: datetime
    by: str  # who set the status: "person" or "us"
    score: int | None = None  # a field a person edits, read with the record (criteria triggers)

    @property
    def fields(self) -> dict[str, Any]:
        return {"Score": self.score}


@dataclass(frozen=True)
class Activity:
    key: str  # the CRM's own id for the activity
    record_id: str
    type: str
    at: datetime  # when it happened (ActivityDate, hs_timestamp)
    stamp: datetime  # when it was created in the CRM: what the activity pull's cursor follows
    committed_at: datetime


@dataclass
class DrainCall:
    """What one `Drain.run` asked of the CRM and what it answered."""

    read: dict[str, RemoteRecord] | None = None  # the conflict check's live read
    read_failed: bool = False
    writes: list[StatusWrite] = field(default_factory=list)
    outcomes: list[WriteOutcome] | None = None  # None: the call failed as a whole (or the process died)
    whole_failure: bool = False
    killed: bool = False


class LaggyCrm:
    """One object's records in a CRM that answers late; `now` is the CRM's clock, moved by the test."""

    def __init__(self, profile: str, settle: timedelta, now: datetime, page_size: int = 2) -> None:
        self.name = "crm"
        self.profile = profile  # "salesforce" or "hubspot"
        self.settle = settle
        self.now = now
        self.page_size = page_size
        self.lag = timedelta(0)
        self.versions: dict[str, list[Version]] = {}
        self.created: dict[str, datetime] = {}
        self.activities: list[Activity] = []
        self.faults: dict[str, str] = {}  # where -> what; each fires once
        self.record_pages: list[list[RemoteRecord]] = []  # committed-to-the-engine pages, for the model
        self.event_pages: list[list[RemoteEvent]] = []
        self.drains: list[DrainCall] = []
        self.clobbers: list[str] = []  # our writes over a person's edit the store did not know

    # --- the CRM's own side: people and their clock ----------------------------------------------
    def stamp(self, rid: str) -> datetime:
        """The CRM's modified stamp for an edit now: Salesforce to the second, HubSpot to the millisecond."""
        if self.profile == "salesforce":
            return self.now.replace(microsecond=0)
        versions = self.versions.get(rid)
        last = versions[-1].stamp if versions else None
        return self.now if last is None or self.now > last else last + MS

    def create(
        self,
        rid: str,
        status: str,
        created: datetime,
        modified: datetime,
        delay: timedelta = timedelta(0),
        score: int | None = None,
    ) -> None:
        self.created[rid] = created
        self.versions[rid] = [Version(status, modified, modified + delay, "person", score)]

    def edit(self, rid: str, status: str, delay: timedelta) -> None:
        """A person's edit, committed (visible) `delay` after its stamp; one record's edits commit in order."""
        last = self.versions[rid][-1]
        self.versions[rid].append(
            Version(status, self.stamp(rid), max(self.now + delay, last.committed_at), "person", last.score)
        )

    def edit_score(self, rid: str, score: int | None, delay: timedelta) -> None:
        """A person's edit of the score only: the status stays as whoever set it last."""
        last = self.versions[rid][-1]
        self.versions[rid].append(
            Version(last.status, self.stamp(rid), max(self.now + delay, last.committed_at), last.by, score)
        )

    def add_activity(self, key: str, rid: str, kind: str, at: datetime, delay: timedelta) -> None:
        self.activities.append(Activity(key, rid, kind, at, self.now, self.now + delay))

    def live(self, rid: str) -> Version:
        """The record as a read by id sees it: Salesforce what committed, HubSpot the newest edit."""
        versions = self.versions[rid]
        if self.profile == "hubspot":
            return versions[-1]
        return [v for v in versions if v.committed_at <= self.now][-1]

    def uncommitted(self, rid: str) -> bool:
        return self.versions[rid][-1].committed_at > self.now

    def searched(self, rid: str) -> Version | None:
        """The record as the search index shows it: as it was `lag` ago, committed edits only."""
        seen = [v for v in self.versions[rid] if v.committed_at <= self.now - self.lag]
        return seen[-1] if seen else None

    def _fault(self, where: str) -> str | None:
        return self.faults.pop(where, None)

    # --- the Source protocol ---------------------------------------------------------------------
    def pull(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[Page]:
        fault = self._fault("pull")
        if fault == "fail":
            raise CrmError(Action.RETRY, "Service Unavailable", status=503)
        rows = []
        for rid in sorted(self.versions):
            version = self.searched(rid)
            if version is not None and _wanted(version.stamp, rid, cursor, until - self.settle):
                rows.append(
                    RemoteRecord(
                        rid, version.status, version.stamp, fields=version.fields, created_at=self.created[rid]
                    )
                )
        rows.sort(key=lambda r: (r.modified_at, r.id))
        for number, start in enumerate(range(0, len(rows), self.page_size)):
            if fault == "kill" and number == 1:
                raise Killed("killed in the middle of a record pull")
            chunk = rows[start : start + self.page_size]
            self.record_pages.append(chunk)
            yield Page(chunk, Cursor(chunk[-1].modified_at, chunk[-1].id))

    def pull_all(self, obj: str) -> Iterator[Page]:
        raise AssertionError("the contract model never runs a full pull")

    def pull_events(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[EventPage]:
        fault = self._fault("events")
        if fault == "fail":
            raise CrmError(Action.RETRY, "Service Unavailable", status=503)
        seen = [
            a
            for a in self.activities
            if a.committed_at <= self.now - self.lag and _wanted(a.stamp, a.key, cursor, until - self.settle)
        ]
        seen.sort(key=lambda a: (a.stamp, a.key))
        for number, start in enumerate(range(0, len(seen), self.page_size)):
            if fault == "kill" and number == 1:
                raise Killed("killed in the middle of an activity pull")
            chunk = seen[start : start + self.page_size]
            events = [RemoteEvent(a.record_id, a.type, a.at, a.key) for a in chunk]
            self.event_pages.append(events)
            yield EventPage(events, Cursor(chunk[-1].stamp, chunk[-1].key))

    def read_statuses(self, obj: str, record_ids: Sequence[str]) -> dict[str, RemoteRecord]:
        call = DrainCall()
        self.drains.append(call)
        if self._fault("read") == "fail":
            call.read_failed = True
            raise CrmError(Action.RETRY, "Service Unavailable", status=503)
        found = {}
        for rid in record_ids:
            version = self.live(rid)
            found[rid] = RemoteRecord(
                rid, version.status, version.stamp, fields=version.fields, created_at=self.created[rid]
            )
        call.read = dict(found)
        return found

    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        call = self.drains[-1]  # the conflict check always reads first, in the same drain
        call.writes = list(writes)
        fault = self._fault("write")
        if fault == "whole":
            call.whole_failure = True
            raise CrmError(Action.RETRY, "Service Unavailable", status=503)
        outcomes = []
        for number, write in enumerate(writes):
            rid = write.record_id
            if fault == "record" and number == 0:
                error = CrmError(
                    Action.RECORD, "Status: bad value for this record type", code="FIELD_CUSTOM_VALIDATION_EXCEPTION"
                )
                outcomes.append(WriteOutcome(rid, error))
                continue
            if self.profile == "salesforce" and self.uncommitted(rid):
                message = "unable to obtain exclusive access to this record"
                outcomes.append(WriteOutcome(rid, CrmError(Action.RETRY, message, code="UNABLE_TO_LOCK_ROW")))
                continue
            current = self.live(rid)
            if current.by == "person" and current.status != write.previous_status:
                self.clobbers.append(f"{rid}: wrote {write.status!r} over a person's {current.status!r}")
            stamp = self.stamp(rid)
            self.versions[rid].append(Version(write.status, stamp, self.now, "us", self.versions[rid][-1].score))
            outcomes.append(WriteOutcome(rid, modified_at=stamp if self.profile == "hubspot" else None))
        if fault == "kill":
            call.killed = True
            raise Killed("killed after the CRM accepted the write, before the store confirmed it")
        call.outcomes = outcomes
        return outcomes

    def status_changed_at(self, obj: str, record_ids: Sequence[str]) -> dict[str, datetime]:
        return {}

    def describe_field(self, obj: str, field: str | None = None) -> FieldInfo:
        return FieldInfo(exists=True, is_picklist=True)

    def usage(self) -> ApiUsage:
        return ApiUsage()

    def close(self) -> None:
        return None

    # --- for the checks ----------------------------------------------------------------------------
    def person_statuses(self, rid: str) -> set[str]:
        return {v.status for v in self.versions[rid] if v.by == "person"}

    def take_pages(self) -> tuple[list[list[RemoteRecord]], list[list[RemoteEvent]]]:
        records, events = self.record_pages, self.event_pages
        self.record_pages, self.event_pages = [], []
        return records, events

    def snapshot(self) -> dict[str, Any]:
        return {rid: self.live(rid).status for rid in self.versions}


def _wanted(stamp: datetime, ident: str, cursor: Cursor, settle_from: datetime) -> bool:
    """After the cursor, or inside the settle window that every pull re-reads."""
    if cursor.modified_at is None or stamp >= settle_from:
        return True
    return (stamp, ident) > (cursor.modified_at, cursor.last_id or "")
