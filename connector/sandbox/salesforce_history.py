"""Months of past life in a sandbox org: records created and edited long ago, with field history
and Tasks / Events dated in the past, as a real org holds on the day the connector is first run.

For tests of "the first sync is a baseline" (DESIGN rule 4): a first sync over such an org must move
nothing and write nothing, and `enroll_existing` must start each record's clock from its status's
last change (from field history), else its modified date.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.sandbox.salesforce_org import Org

# The status field of each standard object in the sandbox org, and how an activity points at it.
STATUS_FIELDS = {"Lead": "Status", "Contact": "Stage__c", "Account": "Account_Stage__c"}
_LINK = {"Lead": "WhoId", "Contact": "WhoId", "Account": "WhatId"}


@dataclass(frozen=True)
class PastRecord:
    id: str
    created: datetime
    modified: datetime  # SystemModstamp = LastModifiedDate
    status: str
    status_changed: datetime | None  # the newest field-history row of the status; None: never changed
    activities: tuple[datetime, ...] = ()  # when each of its Tasks / Events happened


@dataclass(frozen=True)
class History:
    obj: str
    records: list[PastRecord] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def by_id(self) -> dict[str, PastRecord]:
        return {r.id: r for r in self.records}


def seed_history(
    org: Org,
    obj: str,
    count: int,
    *,
    now: datetime,
    months: int = 6,
    activities: int = 2,
    track: bool = True,
    seed: int = 0,
) -> History:
    """`count` records of `obj` created over the `months` before `now`, each with up to three status
    changes (kept as field history when `track`, which also turns tracking on for what follows) and
    `activities` Tasks / Events (a third of them meetings, as Events) dated between creation and `now`.

    Every stamp is at least a minute before `now`, so nothing of it is inside a settle window.
    """
    rng = random.Random(seed)
    status_field = STATUS_FIELDS[obj]
    values = org.picklist_values(obj, status_field)
    span = timedelta(days=30 * months)
    plans: list[tuple[dict[str, Any], list[tuple[datetime, str, str]], list[tuple[datetime, bool]]]] = []
    for i in range(count):
        created = now - span + timedelta(seconds=rng.randrange(int(span.total_seconds()) - 86_400))
        moments = sorted(created + (now - timedelta(minutes=1) - created) * rng.random() for _ in range(3))
        changes, status = [], values[0]
        for moment in moments[: rng.randrange(4)]:
            new = rng.choice([v for v in values if v != status])
            changes.append((moment, status, new))
            status = new
        modified = max([created, *(c[0] for c in changes)])
        done = sorted((created + (now - timedelta(minutes=1) - created) * rng.random(), rng.random() < 1 / 3)
                      for _ in range(activities))
        row: dict[str, Any] = {status_field: status, "CreatedDate": created, "LastModifiedDate": modified,
                               "SystemModstamp": modified}
        if obj in ("Lead", "Contact"):
            row["LastName"] = f"Past {i}"
        if obj == "Lead":
            row["Company"] = "Acme"
        if obj == "Account":
            row["Name"] = f"Past {i}"
        plans.append((row, changes, done))
    if track:
        org.track_history(obj, status_field)
    ids = org.seed(obj, [p[0] for p in plans])
    past = []
    for rid, (row, changes, done) in zip(ids, plans, strict=True):
        for moment, old, new in changes:
            org.add_history(obj, rid, status_field, old, new, moment)
        for moment, meeting in done:
            _past_activity(org, obj, rid, moment, meeting=meeting)
        past.append(PastRecord(
            rid, _second(row["CreatedDate"]), _second(row["SystemModstamp"]), row[status_field],
            _second(changes[-1][0]) if changes and track else None, tuple(_second(d) for d, _ in done),
        ))
    return History(obj, past)


def _second(value: datetime) -> datetime:
    """Audit fields have whole seconds."""
    return value.astimezone(UTC).replace(microsecond=0)


def _past_activity(org: Org, obj: str, record_id: str, when: datetime, *, meeting: bool) -> None:
    stamp = _second(when)
    fields: dict[str, Any] = {"CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp,
                              "ActivityDate": stamp.date(), _LINK[obj]: record_id}
    if meeting:
        org.seed("Event", [{**fields, "Subject": "Meeting", "Type": "Meeting", "ActivityDateTime": stamp}])
    else:
        org.seed("Task", [{**fields, "Subject": "Call", "Type": "Call", "Status": "Completed"}])
