"""The first pull of a HubSpot object reads the list API, not search: the cursor it commits. No I/O here.

Why: search pages 200 records at five searches a second and stops at 10,000 results (each window
restart costs a search), while the list API (`GET /crm/v3/objects/{type}`) pages 100 at the general
rate limit (100 or 190 calls per 10 s) with no cap. For the first read of a whole object the list is
the faster reader; incremental pulls stay on search, the only reader ordered by modification.

The list is ordered by id, not by modification, so no list page can carry a (modified, id) position
past everything it read. Instead:

* the listing's *start* is the newest modified stamp search shows just before the listing begins,
  less the settle window. Every change made during the listing is stamped after that instant by
  HubSpot's own clock (ours may be off: the cursor never runs ahead of what HubSpot stamped), and
  the settle window covers a search index or a list that shows a change late. So the first
  incremental search, which reads from the cursor onwards (and its lookback), re-reads every change
  the list may have missed; the engine de-duplicates by (id, stamp, status) what it had shown. An
  object with no record yet has no start: its listing commits no cursor, and the next pull lists it
  again (cheaply, or whatever was created meanwhile).
* while the listing runs, each page commits the cursor `(start - 1 ms, "list:<n>:<token>")`: the
  position of the next page (HubSpot's `after` paging token, prefixed with its length so that the
  engine's order of cursors is the order of numeric tokens). A crash, a stop or a pause resumes the
  listing there, with the same start; nothing listed before the token is read again, nothing after it
  is lost. A token this cannot store (too long, or characters we would not write back into a URL)
  leaves the cursor where it was: a resume then lists again from the last stored place, re-reading
  (de-duplicated) rather than skipping.
* the last page commits `(start, None)`, ahead of every listing cursor: searches go on from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from connector.sources.base import Cursor
from connector.sources.hubspot_stream import at_ms, ms_of

PREFIX = "list:"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,40}$")  # what we store and send back; HubSpot's are ids
_STORED = re.compile(r"^list:(\d{2}):([A-Za-z0-9_-]{1,40})$")


@dataclass(frozen=True)
class Listing:
    """A listing under way: the instant searches will start from, and where the next page starts."""

    start_ms: int | None  # None: the object had no record when the listing began
    after: str | None = None  # HubSpot's paging token; None: from the first record


def begin(newest_ms: int | None, settle_ms: int) -> Listing:
    return Listing(None if newest_ms is None else newest_ms - settle_ms)


def resumed(cursor: Cursor) -> Listing | None:
    """The listing a stored cursor says is under way, or None (a search cursor, or none yet)."""
    if cursor.modified_at is None or not cursor.last_id:
        return None
    match = _STORED.match(cursor.last_id)
    if match is None or int(match.group(1)) != len(match.group(2)):
        return None
    return Listing(ms_of(cursor.modified_at) + 1, match.group(2))


def page_cursor(listing: Listing, next_after: str | None) -> Cursor:
    """The cursor committed with a page whose successor starts at `next_after` (None: the last page)."""
    if listing.start_ms is None:
        return Cursor()  # nothing to start searches from: the next pull lists again
    if next_after is None:
        return Cursor(at_ms(listing.start_ms), None)
    if not _TOKEN.match(next_after):
        return Cursor()  # behind any stored cursor: the engine keeps the last resumable one
    return Cursor(at_ms(listing.start_ms - 1), f"{PREFIX}{len(next_after):02d}:{next_after}")
