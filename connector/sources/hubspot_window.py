"""The cursor window of an incremental HubSpot search: which search to send next, and which records of
each answer are complete enough to hand on. No I/O here; `hubspot.py` sends the searches.

HubSpot's search honours one sort, orders records that share a sort value as it likes (and not always
the same way twice), and refuses to page past 10,000 results. So no search here pages by offset:

* a *range* search asks for `modified >= s` (or `> s`) and `<= until`, sorted by modified, first page
  only. Every timestamp group on the page but the last is whole: its members sort before the last
  group's. Those are handed on; the next range search starts at the last group's timestamp, so that
  group is read whole at the top of the next page.
* when a full page holds one timestamp only, that group is read by a *tie* search, `modified == t and
  hs_object_id > last id`, sorted by id: keyset paging that reads any number of records on one
  millisecond (25,000 on one import are common) exactly once.

A pull starts a lookback before its cursor and re-reads those instants whole, except an instant
behind the cursor with more records than a page (a bulk import): that one is re-read one page deep,
not on every pull in full. Every search starts strictly after the previous one; one that would not,
or an answer holding records the search excluded, is an error, never a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from connector.sources.errors import Action, CrmError

R = TypeVar("R")


@dataclass(frozen=True, order=True)
class Mark:
    """A record's place in cursor order: (modified epoch ms, numeric id)."""

    ms: int
    id: int


@dataclass(frozen=True)
class Search:
    """One search to send. `tie_ms` set: the rest of one millisecond by id; else a range by date."""

    until_ms: int
    since_ms: int | None = None  # None: from the first record
    inclusive: bool = True  # since_ms itself included
    tie_ms: int | None = None
    after_id: int = 0

    @property
    def is_tie(self) -> bool:
        return self.tie_ms is not None

    @property
    def lowest(self) -> Mark:
        """The first mark this search can return: each search must start past the previous one."""
        if self.tie_ms is not None:
            return Mark(self.tie_ms, self.after_id + 1)
        if self.since_ms is None:
            return Mark(-(2**63), 0)
        return Mark(self.since_ms if self.inclusive else self.since_ms + 1, 0)

    def admits(self, mark: Mark) -> bool:
        if self.tie_ms is not None:
            return mark.ms == self.tie_ms and mark.id > self.after_id
        return self.lowest <= mark and mark.ms <= self.until_ms


class WindowStalled(CrmError):
    """HubSpot answered a search with records it should not have, or the window would not advance."""

    def __init__(self, message: str) -> None:
        super().__init__(Action.RETRY, message, code="CURSOR_STALLED")


def first_search(start: Mark | None, until_ms: int, lookback_ms: int) -> Search | None:
    """Where a pull from cursor `start` begins: a lookback re-reads its last instants whole; without one,
    the rest of the cursor's own millisecond comes first, by id."""
    if start is None:
        return Search(until_ms)
    if lookback_ms > 0:
        search = Search(until_ms, start.ms - lookback_ms)
    elif start.id > 0:
        search = Search(until_ms, tie_ms=start.ms, after_id=start.id)
    else:
        search = Search(until_ms, start.ms)
    return search if search.lowest.ms <= until_ms else None


class SearchWindow(Generic[R]):
    """Walks one window of a search to `until`, page by page; `take` says what each answer completes.

    `floor` is the cursor the pull started from: a lookback re-reads records before it, and the
    cursor handed on never moves back past it.
    """

    def __init__(self, first: Search | None, mark: Callable[[R], Mark], *, limit: int, floor: Mark | None) -> None:
        self.next: Search | None = first
        self.cursor: Mark | None = floor
        self._floor = floor
        self._mark = mark
        self._limit = limit

    def take(self, rows: Sequence[R], more: bool) -> list[R]:
        """The rows of the answer to `self.next` that are complete, in cursor order; moves `next` on.

        `more`: HubSpot said there is a further page (or the page came back full).
        """
        search = self.next
        if search is None:
            raise RuntimeError("the window is finished")
        marked = sorted(((self._mark(r), r) for r in rows), key=lambda pair: pair[0])
        stray = next((m for m, _ in marked if not search.admits(m)), None)
        if stray is not None:
            raise WindowStalled(f"HubSpot answered a search with a record outside it: {stray} for {search}")
        more = bool(rows) and (more or len(rows) >= self._limit)
        if not more:
            done, following = marked, self._after_last(search)
        elif search.is_tie:
            done, following = marked, Search(search.until_ms, tie_ms=search.tie_ms, after_id=marked[-1][0].id)
        else:
            last_ms = marked[-1][0].ms
            done = [pair for pair in marked if pair[0].ms < last_ms]
            # The last group may go on past this page: read it whole, by date if it fits on a page,
            # else by id on its own millisecond.
            if done:
                following = Search(search.until_ms, last_ms)
            else:
                done, following = self._crowd(search, last_ms, marked)
        if following is not None and following.lowest <= search.lowest:
            raise WindowStalled(f"the search window would not advance past {search.lowest} ({following})")
        self.next = following
        if done and (self.cursor is None or done[-1][0] > self.cursor):
            self.cursor = done[-1][0]
        return [r for _, r in done]

    def _crowd(self, search: Search, ms: int, page: list[tuple[Mark, R]]) -> tuple[list[tuple[Mark, R]], Search]:
        """A full page of one millisecond. Behind the cursor (the lookback), that group was read
        before: this page re-reads some of it and the rest is skipped, so that a large group is not
        read again on every pull. On the cursor's own millisecond, only what follows the cursor is
        read. Past it, the group is read whole, by id."""
        floor = self._floor
        if floor is not None and ms < floor.ms:
            return page, Search(search.until_ms, ms, inclusive=False)
        after = floor.id if floor is not None and ms == floor.ms else 0
        return [], Search(search.until_ms, tie_ms=ms, after_id=after)

    @staticmethod
    def _after_last(search: Search) -> Search | None:
        """Where a search goes on once an answer had no further page."""
        if search.is_tie:
            assert search.tie_ms is not None
            following = Search(search.until_ms, search.tie_ms, inclusive=False)
            return following if following.lowest.ms <= search.until_ms else None
        return None
