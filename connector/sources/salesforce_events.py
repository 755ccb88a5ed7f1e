"""Reading Salesforce activity (Tasks and Events) for one synced object, incrementally.

Each activity object is read like records, by the keyset window with its settle re-read. People
(Lead, Contact) get an activity through its WhoId and, with Shared Activities, through every
TaskRelation / EventRelation row that names them; an Account through the AccountId Salesforce
fills in; any other object through WhatId. The relation rows of a page's activities come in one
query per 300 activities, never one per activity. An org without Shared Activities has no relation
objects (INVALID_TYPE): WhoId is then the only person an activity has, and that is all we read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from connector.sources import salesforce_soql as soql
from connector.sources.base import Cursor, EventPage, RemoteEvent
from connector.sources.errors import CrmError
from connector.sources.salesforce_activity import (
    ACTIVITY_OBJECTS,
    ActivityObject,
    TaskRule,
    event_of,
    is_people,
    link_field,
    occurred_at,
)

log = logging.getLogger(__name__)
Pages = Callable[[str], Iterator[list[dict[str, Any]]]]
FieldsOf = Callable[[str], set[str]]  # an sObject's field names, lower-cased (from describe)
_ON_BOTH = {"subject", "type"}  # fields of both Task and Event: no describe needed for the defaults


class ActivityReader:
    """One pull of one object's activity: every activity object in turn, up to the same `until`."""

    def __init__(
        self, obj: str, prefix: str, rules: tuple[TaskRule, ...], settle: timedelta, fields_of: FieldsOf
    ) -> None:
        self.obj, self.prefix, self.rules, self.settle = obj, prefix, rules, settle
        self.fields_of = fields_of
        self.link = link_field(obj)
        self.people = is_people(obj)

    def pull(self, pages: Pages, cursor: Cursor, until: datetime) -> Iterator[EventPage]:
        # Tasks and Events share the object's one activity cursor. Pages of all but the last object
        # carry the starting cursor: a pull cut short after Tasks must not skip the Events behind
        # them. Once every object was read up to `until`, the cursor moves to the newest row seen.
        newest = cursor
        for index, kind in enumerate(ACTIVITY_OBJECTS):
            last_kind = index == len(ACTIVITY_OBJECTS) - 1
            committed = cursor
            window = soql.Window(cursor, until, self.settle)
            fields = soql.columns(["Id", "WhoId", "WhatId", self.link, "CreatedDate", *kind.dated, "SystemModstamp",
                                   *self._rule_fields(kind)])
            text = soql.select(fields, kind.name, f"({window.where()}) AND {self.link} != null", "SystemModstamp, Id")
            for rows in pages(text):
                if not rows:
                    continue
                last = Cursor(soql.parse_datetime(rows[-1]["SystemModstamp"]), rows[-1]["Id"])
                newest = soql.later(newest, last)
                if last_kind:
                    committed = soql.later(committed, last)
                yield EventPage(self._events(pages, kind, rows), committed)
        if newest != cursor:
            yield EventPage([], newest)

    def _rule_fields(self, kind: ActivityObject) -> list[str]:
        """The fields `activity.types` tests that this object has (CallType is a Task's, not an Event's)."""
        wanted = [rule.field for rule in self.rules]
        if all(name.lower() in _ON_BOTH for name in wanted):
            return wanted
        known = self.fields_of(kind.name)
        return [name for name in wanted if name.lower() in known]

    def _events(self, pages: Pages, kind: ActivityObject, rows: Sequence[Mapping[str, Any]]) -> list[RemoteEvent]:
        events: list[RemoteEvent] = []
        matched: dict[str, tuple[str, datetime, str | None]] = {}
        for row in rows:
            event = event_of({key.lower(): value for key, value in row.items()}, self.rules)
            if event is None:
                continue
            at = occurred_at(row, kind.dated)
            target = row.get(self.link)
            matched[row["Id"]] = (event, at, target if isinstance(target, str) else None)
            if isinstance(target, str) and target.startswith(self.prefix):
                events.append(RemoteEvent(target, event, at, f"{kind.name}:{row['Id']}"))
        if self.people and matched:
            for activity, person in self._others(pages, kind, matched):
                event, at, primary = matched[activity]
                if person != primary and person.startswith(self.prefix):
                    events.append(RemoteEvent(person, event, at, f"{kind.name}:{activity}:{person}"))
        return events

    def _others(
        self, pages: Pages, kind: ActivityObject, matched: Mapping[str, Any]
    ) -> Iterator[tuple[str, str]]:
        """(activity Id, person Id) for every person on these activities, from the relation object."""
        for chunk in soql.id_chunks(matched):
            where = f"IsWhat = false AND {kind.parent} IN ({', '.join(map(soql.quote, chunk))})"
            text = soql.select(("RelationId", kind.parent), kind.relation, where)
            try:
                rows = [row for page in pages(text) for row in page]
            except CrmError as exc:
                if exc.code != "INVALID_TYPE":
                    raise
                log.debug("no %s in this org (Shared Activities off): %s", kind.relation, exc.message)
                return
            for row in rows:
                activity, person = row.get(kind.parent), row.get("RelationId")
                if isinstance(activity, str) and isinstance(person, str):
                    yield activity, person
