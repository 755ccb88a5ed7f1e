"""HubSpot's search index as a lagging copy of the records, for the stand-in's searches.

HubSpot documents that "it may take a few moments for newly created or updated CRM objects to appear
in search results" (developers.hubspot.com/docs/api/crm/search, "Limitations"), while reads by id
(GET, batch read) answer live. So a search sees each record as it was some seconds ago: its old
values, its old modified date, and not at all if it was created since. `SearchView` holds that copy:
every change of a record is queued with the instant it becomes searchable (its own stamp plus the
lag, plus any extra delay a test asks for), and a search first takes in what has come due.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from connector.sandbox.hubspot_search import Record, SortedIndex

_BULK = 64  # more additions than this at once: append and sort instead of inserting one by one


class _Source(Protocol):
    created_prop: str
    modified_prop: str

    def kind(self, name: str) -> str | None: ...

    def links_to(self, to_type: str) -> Mapping[int, list[int]] | None: ...


def snapshot(record: Record) -> Record:
    return Record(record.id, dict(record.values), record.created_ms, record.modified_ms, record.archived_ms)


@dataclass
class SearchView:
    """What search sees of one object type; it has the search's `Table` shape (associations live)."""

    source: _Source
    records: dict[int, Record] = field(default_factory=dict)
    index: SortedIndex = field(default_factory=SortedIndex)
    _pending: list[tuple[int, int, Record]] = field(default_factory=list)
    _seq: int = 0

    @property
    def created_prop(self) -> str:
        return self.source.created_prop

    @property
    def modified_prop(self) -> str:
        return self.source.modified_prop

    def kind(self, name: str) -> str | None:
        return self.source.kind(name)

    def links_to(self, to_type: str) -> Mapping[int, list[int]] | None:
        return self.source.links_to(to_type)

    def note(self, record: Record, visible_ms: int) -> None:
        """The record as it is now becomes searchable at `visible_ms`."""
        self._seq += 1
        heapq.heappush(self._pending, (visible_ms, self._seq, snapshot(record)))

    def catch_up(self, now_ms: int) -> None:
        """Take in every change searchable by `now_ms`, in the order they became so."""
        adding: dict[int, Record] = {}
        while self._pending and self._pending[0][0] <= now_ms:
            _, _, new = heapq.heappop(self._pending)
            old = self.records.get(new.id)
            if new.id in adding:
                del adding[new.id]  # not filed yet: nothing to take out of the index
            elif old is not None and old.archived_ms is None:
                self.index.remove(old)
            self.records[new.id] = new
            if new.archived_ms is None:
                adding[new.id] = new
        if len(adding) > _BULK:
            self.index.ids.extend(adding)
            self.index.ids.sort()
            self.index.mods.extend((r.modified_ms, r.id) for r in adding.values())
            self.index.mods.sort()
        else:
            for record in adding.values():
                self.index.add(record)

    @property
    def waiting(self) -> int:
        """Changes made and not yet searchable."""
        return len(self._pending)

