"""SOQL text for the Salesforce source: quoted literals, checked names, and the keyset window of a pull.

Kept apart from fetching so that the cursor logic is small and tested on its own (the sandbox's SOQL
parser then checks that Salesforce would accept what we send).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from connector.sources.base import Cursor

# SOQL string escapes: a backslash and a quote must be escaped, and so must the control characters
# Salesforce names, or a value with a line break would end the literal.
_ESCAPES = str.maketrans(
    {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*$")
_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")

# How many Ids one `WHERE Id IN (...)` carries: ~25 URL-encoded characters each keeps the GET well
# under Salesforce's 16 KB URL limit.
IDS_PER_QUERY = 300


def quote(value: str) -> str:
    return "'" + value.translate(_ESCAPES) + "'"


def name(value: str) -> str:
    """An object or field name from the config, refused unless it is a plain API name."""
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a Salesforce API name")
    return value


def is_id(value: str) -> bool:
    return bool(_ID.match(value))


def literal(value: datetime) -> str:
    """A dateTime literal. Audit fields have whole seconds, so dropping the fraction loses nothing."""
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=4096)  # thousands of records share one SystemModstamp
def parse_datetime(text: str) -> datetime:
    """Salesforce's `2024-05-01T12:00:00.000+0000`, as an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


def columns(names: Iterable[str]) -> list[str]:
    """Names without duplicates (Salesforce refuses a field selected twice, whatever its case)."""
    seen: set[str] = set()
    out: list[str] = []
    for item in names:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(name(item))
    return out


@dataclass(frozen=True)
class Window:
    """Which modifications one incremental pull reads, up to `until`.

    Everything after the cursor, by the exact keyset (SystemModstamp, Id), plus everything stamped in
    the last `settle` before `until`: a Salesforce transaction can commit with a SystemModstamp older
    than records already visible, so the newest edge is read again until it has settled. What is
    stamped before `until - settle` and at or before the cursor is settled and never read again.
    """

    cursor: Cursor
    until: datetime
    settle: timedelta = timedelta(0)

    def where(self) -> str:
        upper = f"SystemModstamp <= {literal(self.until)}"
        at = self.cursor.modified_at
        if at is None:
            return upper
        start = literal(at)
        if not self.cursor.last_id:
            after = f"SystemModstamp >= {start}"
        else:
            # Thousands of records share one second: the Id breaks the tie, so a resumed pull neither
            # skips nor repeats any of them.
            after = f"SystemModstamp > {start} OR (SystemModstamp = {start} AND Id > {quote(self.cursor.last_id)})"
        settled = self.until - self.settle
        if self.settle and settled <= at:
            after += f" OR SystemModstamp >= {literal(settled)}"
        return f"({after}) AND {upper}"


def later(mine: Cursor, last: Cursor) -> Cursor:
    """The cursor after a page ending at `last`: a settle re-read never moves it backwards."""
    if mine.modified_at is None or last.modified_at is None:
        return last
    if (last.modified_at, last.last_id or "") < (mine.modified_at, mine.last_id or ""):
        return mine
    return last


def select(fields: Iterable[str], obj: str, where: str | None = None, order: str | None = None) -> str:
    text = f"SELECT {', '.join(fields)} FROM {name(obj)}"
    if where:
        text += f" WHERE {where}"
    if order:
        text += f" ORDER BY {order}"
    return text


def id_chunks(ids: Iterable[str], size: int = IDS_PER_QUERY) -> Iterable[list[str]]:
    """Well-formed Ids in groups for `WHERE Id IN`; anything else cannot be a record and is left out."""
    chunk: list[str] = []
    for value in ids:
        if is_id(value):
            chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def id_in(ids: Iterable[str]) -> str:
    return f"Id IN ({', '.join(quote(i) for i in ids)})"
