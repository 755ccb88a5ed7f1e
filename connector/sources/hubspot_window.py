"""The cursor window of an incremental HubSpot search: which search to send next, and which records of
each answer are complete enough to hand on. No I/O here; `hubspot.py` sends the searches.

HubSpot's search honours one sort, orders records that share a sort value as it likes (and not always
the same way twice), and refuses to page past 10,000 results. So no search here pages by offset:

* a *range* search asks for `modified >= s` (or `> s`) and `<= until`, sorted by modified, first page
  only. Every timestamp group on the page but the last is whole: its members sort before the last
  group's. Those are handed on; the next range search starts at the last group's timestamp, so that
  group is read whole at the top of the next page.
* when a full page holds one timestamp only, that group is read by a *tie* search, `modified == t`,
  sorted by id: keyset paging, `hs_object_id > last id`, that reads any number of records on one
  millisecond (25,000 on one import are common) exactly once. A public connector's tests record
  HubSpot comparing `hs_object_id` as text in filters ("10000" > "9999" is false), under which the
  keyset skips records or stalls. The source asks HubSpot once which reading it uses (`by_offset`);
  under the text one a tie is paged by HubSpot's `after` offset instead, and the ids read before
  (the cursor's own millisecond) are dropped here, not by a filter. Past 10,000 rows of one
  millisecond only the keyset pages on: under the text reading that stops with CURSOR_STALLED
  rather than skip or loop.

A pull re-reads before its cursor: the lookback, and the *settle window* (every record modified at
or after `until - settle`), because HubSpot's search shows a change seconds to minutes late, after
newer ones (DESIGN, "Reading a CRM that answers late"). The engine de-duplicates what is read twice.
Those instants are re-read whole, except an instant behind the cursor with more records than a page
(a bulk import): that one is re-read one page deep, not on every pull in full. Every search starts
strictly after the previous one; one that would not, or an answer holding records the search
excluded, is an error, never a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from connector.sources.errors import Action, CrmError

R = TypeVar("R")
MAX_RESULTS = 10_000  # HubSpot's search refuses `after + limit` past this


@dataclass(frozen=True, order=True)
class Mark:
    """A record's place in cursor order: (modified epoch ms, numeric id)."""

    ms: int
    id: int


@dataclass(frozen=True)
class Search:
    """One search to send. `tie_ms` set: one millisecond by id; else a range by date."""

    until_ms: int
    since_ms: int | None = None  # None: from the first record
    inclusive: bool = True  # since_ms itself included
    tie_ms: int | None = None
    after_id: int = 0  # in a tie: ids up to this one were read before and are dropped here
    offset: int = 0  # in a tie: HubSpot's `after`, the rows of the group already paged through
    keyset: int | None = None  # in a tie past MAX_RESULTS rows: the filter `hs_object_id > keyset`

    @property
    def is_tie(self) -> bool:
        return self.tie_ms is not None

    @property
    def lowest(self) -> Mark:
        """The first mark this search can return: each search must start past the previous one."""
        if self.tie_ms is not None:
            return Mark(self.tie_ms, max(self.after_id, self.keyset or 0) + 1)
        if self.since_ms is None:
            return Mark(-(2**63), 0)
        return Mark(self.since_ms if self.inclusive else self.since_ms + 1, 0)

    @property
    def progress(self) -> tuple[Mark, int]:
        """Grows with every search of a window: a window whose next search would not is stalled."""
        return self.lowest, self.offset

    def admits(self, mark: Mark) -> bool:
        if self.tie_ms is not None:
            return mark.ms == self.tie_ms  # ids are checked by `take`: HubSpot may compare them as text
        return self.lowest <= mark and mark.ms <= self.until_ms


class WindowStalled(CrmError):
    """HubSpot answered a search with records it should not have, or the window would not advance."""

    def __init__(self, message: str) -> None:
        super().__init__(Action.RETRY, message, code="CURSOR_STALLED")


def tie(until_ms: int, ms: int, after_id: int, by_offset: Callable[[], bool]) -> Search:
    """A tie search from the start of millisecond `ms`, handing on ids past `after_id`."""
    return Search(until_ms, tie_ms=ms, after_id=after_id, keyset=None if by_offset() else after_id)


def _numeric() -> bool:
    return False


def first_search(
    start: Mark | None,
    until_ms: int,
    lookback_ms: int,
    settle_ms: int = 0,
    by_offset: Callable[[], bool] = _numeric,
) -> Search | None:
    """Where a pull from cursor `start` begins: the lookback and the settle window (`until - settle`,
    when that is not past the cursor) re-read their instants whole; without either, the rest of the
    cursor's own millisecond comes first, by id."""
    if start is None:
        return Search(until_ms)
    rereads = [start.ms - lookback_ms] if lookback_ms > 0 else []
    if settle_ms > 0 and until_ms - settle_ms <= start.ms:
        rereads.append(until_ms - settle_ms)
    if rereads:
        search = Search(until_ms, min(rereads))
    elif start.id > 0:
        search = tie(until_ms, start.ms, start.id, by_offset)
    else:
        search = Search(until_ms, start.ms)
    return search if search.lowest.ms <= until_ms else None


class SearchWindow(Generic[R]):
    """Walks one window of a search to `until`, page by page; `take` says what each answer completes.

    `floor` is the cursor the pull started from: a lookback re-reads records before it, and the
    cursor handed on never moves back past it.
    """

    def __init__(
        self,
        first: Search | None,
        mark: Callable[[R], Mark],
        *,
        limit: int,
        floor: Mark | None,
        by_offset: Callable[[], bool] = _numeric,
    ) -> None:
        self.next: Search | None = first
        self.cursor: Mark | None = floor
        self._floor = floor
        self._mark = mark
        self._limit = limit
        self._by_offset = by_offset

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
        if search.is_tie:
            read_before = max(search.after_id, search.keyset or 0)
            done = [pair for pair in marked if pair[0].id > read_before]
            following = self._next_tie(search, marked, len(rows)) if more else self._after_last(search)
        elif not more:
            done, following = marked, self._after_last(search)
        else:
            last_ms = marked[-1][0].ms
            done = [pair for pair in marked if pair[0].ms < last_ms]
            # The last group may go on past this page: read it whole, by date if it fits on a page,
            # else by id on its own millisecond.
            if done:
                following = Search(search.until_ms, last_ms)
            else:
                done, following = self._crowd(search, last_ms, marked)
        if following is not None and following.progress <= search.progress:
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
        return [], tie(search.until_ms, ms, after, self._by_offset)

    def _next_tie(self, search: Search, page: list[tuple[Mark, R]], rows: int) -> Search:
        """The next page of a tie: by offset while HubSpot pages that far, then by id."""
        offset = search.offset + rows
        if search.keyset is None and offset + self._limit <= MAX_RESULTS:
            return replace(search, offset=offset)
        highest = max((m.id for m, _ in page), default=0)
        return replace(search, offset=0, keyset=max(highest, search.keyset or 0))

    @staticmethod
    def _after_last(search: Search) -> Search | None:
        """Where a search goes on once an answer had no further page."""
        if search.is_tie:
            assert search.tie_ms is not None
            following = Search(search.until_ms, search.tie_ms, inclusive=False)
            return following if following.lowest.ms <= search.until_ms else None
        return None
