"""Salesforce Tasks as activity events: which Tasks belong to an object, and which event each one is.

`activity.types` maps a Task condition to an event; the first condition that matches wins, in the
order written. A condition is `Field=Value` (the field equals the value) or `Field^=Value` (the field
starts with the value); both compare without regard to case, as Salesforce compares text. With no
`types`, the defaults are, in this order:

    Subject^=RE:  -> email_replied   (checked first: a reply is also logged as Type=Email)
    Type=Email    -> email_sent
    Type=Call     -> call_logged
    Type=Meeting  -> meeting_booked

Tasks that match no condition are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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
# Tasks point at people through WhoId and at everything else through WhatId.
_WHO_OBJECTS = {"lead": "00Q", "contact": "003"}
KNOWN_PREFIXES = {**_WHO_OBJECTS, "account": "001"}


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
    return "WhoId" if obj.lower() in _WHO_OBJECTS else "WhatId"


def event_of(task: Mapping[str, Any], rules: tuple[TaskRule, ...]) -> str | None:
    return next((rule.event for rule in rules if rule.matches(task)), None)


def occurred_at(task: Mapping[str, Any]) -> datetime:
    """When the activity happened: its CreatedDate, else its ActivityDate, else its last change."""
    created = task.get("CreatedDate")
    if isinstance(created, str):
        return parse_datetime(created)
    day = task.get("ActivityDate")
    if isinstance(day, str):
        return datetime.fromisoformat(day).replace(tzinfo=UTC)
    return parse_datetime(str(task["SystemModstamp"]))
