"""Salesforce Tasks and Events as activity events: which belong to an object, and which event each is.

Meetings are Events, calls and emails mostly Tasks; both are read. A Task or Event names its primary
person in WhoId and its record in WhatId; with Shared Activities, TaskRelation / EventRelation list
every person on it (IsWhat = false), so each of them gets the event. Salesforce fills `AccountId` on
a Task or Event logged on an account, on one of its contacts or on one of its opportunities: an
Account's activity is read through it.

`activity.types` maps a Task condition to an event; the first condition that matches wins, in the
order written. A condition is `Field=Value` (the field equals the value) or `Field^=Value` (the field
starts with the value); both compare without regard to case, as Salesforce compares text. With no
`types`, the defaults are, in this order:

    Subject^=RE:  -> email_replied   (checked first: a reply is also logged as Type=Email)
    Type=Email    -> email_sent
    Type=Call     -> call_logged
    Type=Meeting  -> meeting_booked

Activities that match no condition are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.mapping import is_activity_event
from connector.sources.salesforce_soql import parse_datetime

DEFAULT_TYPES: Mapping[str, str] = {
    "Subject^=RE:": "email_replied",
    "Type=Email": "email_sent",
    "Type=Call": "call_logged",
    "Type=Meeting": "meeting_booked",
}
_CONDITION = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*(\^=|=)\s*(.*?)\s*$")
# Activities point at people through WhoId and at everything else through WhatId (Account: AccountId).
_WHO_OBJECTS = {"lead": "00Q", "contact": "003"}
KNOWN_PREFIXES = {**_WHO_OBJECTS, "account": "001"}


@dataclass(frozen=True)
class ActivityObject:
    """One activity sObject, its Shared Activities relation object, and the relation's pointer back."""

    name: str
    relation: str
    parent: str
    dated: tuple[str, ...]  # when it happened, most precise first


ACTIVITY_OBJECTS = (
    ActivityObject("Task", "TaskRelation", "TaskId", ("ActivityDate",)),
    ActivityObject("Event", "EventRelation", "EventId", ("ActivityDateTime", "ActivityDate")),
)


@dataclass(frozen=True)
class TaskRule:
    field: str
    value: str  # case-folded
    prefix: bool
    event: str

    def matches(self, task: Mapping[str, Any]) -> bool:
        """`task` is keyed by lower-cased field names: config and answer may spell a name differently."""
        actual = task.get(self.field.lower())
        if not isinstance(actual, str):
            return False
        actual = actual.casefold()
        return actual.startswith(self.value) if self.prefix else actual == self.value


def parse_rules(types: Mapping[str, str]) -> tuple[TaskRule, ...]:
    """The rules of `activity.types` (or the defaults); ValueError names every bad entry."""
    rules, problems = [], []
    for key, event in (types or DEFAULT_TYPES).items():
        match = _CONDITION.fullmatch(key)
        if match is None:
            problems.append(f"{key!r}: write Field=Value or Field^=Value")
        elif not is_activity_event(event):
            problems.append(f"{key!r}: unknown event {event!r}")
        else:
            field, op, value = match.groups()
            rules.append(TaskRule(field, value.casefold(), op == "^=", event))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(rules)


def link_field(obj: str) -> str:
    lowered = obj.lower()
    if lowered in _WHO_OBJECTS:
        return "WhoId"
    return "AccountId" if lowered == "account" else "WhatId"


def is_people(obj: str) -> bool:
    return obj.lower() in _WHO_OBJECTS


def event_of(task: Mapping[str, Any], rules: tuple[TaskRule, ...]) -> str | None:
    return next((rule.event for rule in rules if rule.matches(task)), None)


def occurred_at(row: Mapping[str, Any], dated: tuple[str, ...] = ("ActivityDate",)) -> datetime:
    """When the activity happened (DESIGN rule 4): its ActivityDateTime or ActivityDate, if earlier
    than its CreatedDate, else its CreatedDate.

    A call from last month logged today happened last month, and old activity must not count as
    today's. Nothing happened after it was logged, though: a meeting booked today for next week was
    booked today, and a Task due next week is not a future event. A date-only ActivityDate stands
    for the whole day (its last second), so a Task logged this afternoon and dated today is this
    afternoon's, not this morning's.
    """
    created = row.get("CreatedDate")
    logged = parse_datetime(created) if isinstance(created, str) else parse_datetime(str(row["SystemModstamp"]))
    for name in dated:
        value = row.get(name)
        if isinstance(value, str) and value:
            if "T" in value:
                return min(parse_datetime(value), logged)
            day_end = datetime.fromisoformat(value).replace(tzinfo=UTC) + timedelta(days=1, seconds=-1)
            return min(day_end, logged)
    return logged
