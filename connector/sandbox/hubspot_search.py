"""Search evaluation for the HubSpot stand-in: filters, the one sort, paging and the 10,000 cap.

A sync connector pulls with range filters on `hs_object_id` or on the modified-date property, sorted
by the same property. Each object type therefore keeps two sorted indexes of its live records: ids,
and (modified ms, id). A filter group made only of such ranges becomes a slice of one index, so a
page costs a few bisections instead of a scan of every record; anything else falls back to a scan
of the narrowest slice. Both paths return the same results, in the same order.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, Protocol

MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
MAX_LIMIT = 200
MAX_RESULTS = 10_000
DEFAULT_LIMIT = 10

# HubSpot answers most malformed searches, including paging past 10,000 results, with this text.
PROBLEM = "There was a problem with the request."

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_DIGITS = re.compile(r"-?\d+")
_TOKEN = re.compile(r"[^\w@.*-]+")

IndexKey = Literal["id", "mod"]
Predicate = Callable[["Record"], bool]


@dataclass(slots=True)
class Record:
    id: int
    values: dict[str, str]  # set properties only, normalised to HubSpot's string form
    created_ms: int
    modified_ms: int
    archived_ms: int | None = None


class SearchError(Exception):
    def __init__(self, message: str = PROBLEM, category: str = "VALIDATION_ERROR") -> None:
        super().__init__(message)
        self.message = message
        self.category = category


class Table(Protocol):
    """What the search needs to know about one object type."""

    records: dict[int, Record]
    index: SortedIndex

    @property
    def created_prop(self) -> str: ...

    @property
    def modified_prop(self) -> str: ...

    def kind(self, name: str) -> str | None: ...  # string | number | datetime | enumeration, None: unknown

    def links_to(self, to_type: str) -> Mapping[int, list[int]] | None: ...


# --- time ----------------------------------------------------------------------------------------
def dt_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


@lru_cache(maxsize=65_536)
def ms_to_iso(ms: int) -> str:
    stamp = _EPOCH + timedelta(milliseconds=ms)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@lru_cache(maxsize=65_536)
def to_ms(value: str) -> int:
    """Epoch milliseconds from what HubSpot accepts for a date: epoch ms, an ISO date or datetime."""
    text = value.strip()
    if _DIGITS.fullmatch(text):
        return int(text)
    return dt_to_ms(datetime.fromisoformat(text))


# --- indexes -------------------------------------------------------------------------------------
@dataclass
class SortedIndex:
    """The live (unarchived) records of one object type, by id and by (modified ms, id)."""

    ids: list[int] = field(default_factory=list)
    mods: list[tuple[int, int]] = field(default_factory=list)

    def add_many(self, records: Sequence[Record]) -> None:
        if self.ids and records and records[0].id < self.ids[-1]:
            for record in records:
                self.add(record)
            return
        self.ids.extend(r.id for r in records)
        self.mods.extend((r.modified_ms, r.id) for r in records)
        self.mods.sort()

    def add(self, record: Record) -> None:
        bisect.insort(self.ids, record.id)
        bisect.insort(self.mods, (record.modified_ms, record.id))

    def remove(self, record: Record) -> None:
        _discard(self.ids, record.id)
        _discard(self.mods, (record.modified_ms, record.id))

    def move(self, record: Record, modified_ms: int) -> None:
        """Re-files a record under a new modified time; the caller then stores that time."""
        _discard(self.mods, (record.modified_ms, record.id))
        bisect.insort(self.mods, (modified_ms, record.id))

    def clear(self) -> None:
        self.ids.clear()
        self.mods.clear()


def _discard(items: list[Any], item: Any) -> None:
    at = bisect.bisect_left(items, item)
    if at < len(items) and items[at] == item:
        del items[at]


# --- compiling filters ---------------------------------------------------------------------------
@dataclass
class _Range:
    key: IndexKey
    lo: float = -math.inf
    lo_incl: bool = True
    hi: float = math.inf
    hi_incl: bool = True

    def narrow(self, other: _Range) -> None:
        if other.lo > self.lo or (other.lo == self.lo and not other.lo_incl):
            self.lo, self.lo_incl = other.lo, other.lo_incl
        if other.hi < self.hi or (other.hi == self.hi and not other.hi_incl):
            self.hi, self.hi_incl = other.hi, other.hi_incl

    @property
    def pinned(self) -> bool:
        return self.lo == self.hi and self.lo_incl and self.hi_incl

    def closed(self) -> tuple[float, float]:
        """The same bounds as inclusive ones, for the integer keys the indexes hold."""
        lo = self.lo if math.isinf(self.lo) else math.ceil(self.lo) if self.lo_incl else math.floor(self.lo) + 1
        hi = self.hi if math.isinf(self.hi) else math.floor(self.hi) if self.hi_incl else math.ceil(self.hi) - 1
        return lo, hi


@dataclass
class _Filter:
    test: Predicate
    range: _Range | None = None


def getter(table: Table, name: str) -> Callable[[Record], Any]:
    """Typed value of a property: numbers and dates compare as numbers, the rest as strings."""
    if name == "hs_object_id":
        return lambda r: r.id
    if name == table.created_prop:
        return lambda r: r.created_ms
    if name == table.modified_prop:
        return lambda r: r.modified_ms
    kind = table.kind(name)
    if kind == "number":
        return lambda r: _maybe(float, r.values.get(name))
    if kind == "datetime":
        return lambda r: _maybe(to_ms, r.values.get(name))
    return lambda r: r.values.get(name)


def _maybe(convert: Callable[[str], Any], value: str | None) -> Any:
    return None if value is None or value == "" else convert(value)


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        raise SearchError()
    try:
        if kind == "number":
            return float(value)
        if kind == "datetime":
            return to_ms(str(value))
    except ValueError as exc:
        raise SearchError() from exc
    return str(value)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "GT": lambda a, b: bool(a > b),
    "GTE": lambda a, b: bool(a >= b),
    "LT": lambda a, b: bool(a < b),
    "LTE": lambda a, b: bool(a <= b),
}


def _compile(table: Table, spec: Mapping[str, Any], ids_as_text: bool = False) -> _Filter:
    name = spec.get("propertyName")
    operator = spec.get("operator")
    if not isinstance(name, str) or not isinstance(operator, str):
        raise SearchError()
    if name.startswith("associations."):
        return _Filter(_association_test(table, name.split(".", 1)[1], operator, spec))
    kind = table.kind(name)
    if kind is None:
        raise SearchError(f"Property {name!r} does not exist", "VALIDATION_ERROR")
    get = getter(table, name)
    index_key: IndexKey | None = "id" if name == "hs_object_id" else None
    if name == "hs_object_id" and ids_as_text:
        # Compared as text: "10000" > "9999" is false. No index answers that order: a plain test.
        return _value_filter(lambda r: str(r.id), "string", operator, spec, None)
    if name == table.modified_prop:
        index_key = "mod"
    return _value_filter(get, kind, operator, spec, index_key)


def _value_filter(
    get: Callable[[Record], Any], kind: str, operator: str, spec: Mapping[str, Any], key: IndexKey | None
) -> _Filter:
    if operator == "HAS_PROPERTY":
        return _Filter(lambda r: get(r) not in (None, ""))
    if operator == "NOT_HAS_PROPERTY":
        return _Filter(lambda r: get(r) in (None, ""))
    if operator in ("IN", "NOT_IN"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SearchError()
        wanted = {_coerce(kind, v) for v in values}
        if operator == "IN":
            return _Filter(lambda r: get(r) in wanted)
        return _Filter(lambda r: get(r) not in wanted)
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = str(spec.get("value", "")).lower()
        found = _token_test(get, pattern)
        return _Filter(found if operator == "CONTAINS_TOKEN" else lambda r: not found(r))
    if operator == "BETWEEN":
        lo, hi = _coerce(kind, spec.get("value")), _coerce(kind, spec.get("highValue"))
        between = _Range(key, lo, True, hi, True) if key else None
        return _Filter(lambda r: (v := get(r)) is not None and lo <= v <= hi, between)
    value = _coerce(kind, spec.get("value"))
    if operator == "EQ":
        return _Filter(lambda r: get(r) == value, _Range(key, value, True, value, True) if key else None)
    if operator == "NEQ":
        return _Filter(lambda r: get(r) != value)
    compare = _COMPARE.get(operator)
    if compare is None:
        raise SearchError(f"Unknown operator {operator}")
    return _Filter(lambda r: (v := get(r)) is not None and compare(v, value), _bound(key, operator, value))


def _bound(key: IndexKey | None, operator: str, value: float) -> _Range | None:
    if key is None:
        return None
    if operator in ("GT", "GTE"):
        return _Range(key, lo=value, lo_incl=operator == "GTE")
    return _Range(key, hi=value, hi_incl=operator == "LTE")


def _token_test(get: Callable[[Record], Any], pattern: str) -> Predicate:
    def test(record: Record) -> bool:
        value = get(record)
        if value is None:
            return False
        return any(fnmatch.fnmatchcase(token, pattern) for token in _TOKEN.split(str(value).lower()) if token)

    return test


_PLURAL = {"contact": "contacts", "company": "companies", "email": "emails", "meeting": "meetings", "call": "calls"}


def _association_test(table: Table, to_type: str, operator: str, spec: Mapping[str, Any]) -> Predicate:
    links = table.links_to(_PLURAL.get(to_type, to_type))
    if links is None:
        raise SearchError()
    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        present = operator == "HAS_PROPERTY"
        return lambda r: bool(links.get(r.id)) == present
    raw = spec.get("values") if operator in ("IN", "NOT_IN") else [spec.get("value")]
    if not isinstance(raw, list) or not raw:
        raise SearchError()
    try:
        wanted = {int(str(v)) for v in raw}
    except ValueError as exc:
        raise SearchError() from exc
    if operator in ("EQ", "IN"):
        return lambda r: not wanted.isdisjoint(links.get(r.id, ()))
    if operator in ("NEQ", "NOT_IN"):
        return lambda r: wanted.isdisjoint(links.get(r.id, ()))
    raise SearchError(f"Operator {operator} is not supported for associations")


# --- planning one filter group -------------------------------------------------------------------
@dataclass
class _Plan:
    key: IndexKey
    start: int
    end: int
    residual: list[Predicate]
    # A modified range and an id range and nothing else: both ranges and the id slice, for _cross.
    cross: tuple[_Range, _Range, tuple[int, int]] | None = None


def _plan(index: SortedIndex, filters: Sequence[_Filter]) -> _Plan:
    ranges: dict[IndexKey, _Range] = {}
    residual: list[Predicate] = []
    for f in filters:
        if f.range is None:
            residual.append(f.test)
        elif f.range.key in ranges:
            ranges[f.range.key].narrow(f.range)
        else:
            ranges[f.range.key] = _Range(f.range.key, f.range.lo, f.range.lo_incl, f.range.hi, f.range.hi_incl)
    mod, ids = ranges.get("mod"), ranges.get("id")
    if mod is not None and ids is not None and mod.pinned:
        # One modified instant: its (modified, id) entries are contiguous, so the id range narrows
        # the slice too. This is the keyset page through records that share a timestamp.
        return _pinned_slice(index, mod.lo, ids, residual)
    if mod is not None and ids is not None:
        # A scan takes the narrower slice, the other range becoming a plain test on each candidate.
        by_mod, by_id = _mod_slice(index, mod, list(residual)), _id_slice(index, ids, list(residual))
        chosen = by_mod if by_mod.end - by_mod.start < by_id.end - by_id.start else by_id
        other = "id" if chosen is by_mod else "mod"
        chosen.residual.extend(f.test for f in filters if f.range is not None and f.range.key == other)
        chosen.cross = None if residual else (mod, ids, (by_id.start, by_id.end))
        return chosen
    if mod is not None:
        return _mod_slice(index, mod, residual)
    if ids is not None:
        return _id_slice(index, ids, residual)
    return _Plan("id", 0, len(index.ids), residual)


def _id_slice(index: SortedIndex, ids: _Range, residual: list[Predicate]) -> _Plan:
    start = (bisect.bisect_left if ids.lo_incl else bisect.bisect_right)(index.ids, ids.lo)
    end = (bisect.bisect_right if ids.hi_incl else bisect.bisect_left)(index.ids, ids.hi)
    return _Plan("id", start, max(start, end), residual)


def _mod_slice(index: SortedIndex, mod: _Range, residual: list[Predicate]) -> _Plan:
    if mod.lo_incl:
        start = bisect.bisect_left(index.mods, (mod.lo, -math.inf))
    else:
        start = bisect.bisect_right(index.mods, (mod.lo, math.inf))
    if mod.hi_incl:
        end = bisect.bisect_right(index.mods, (mod.hi, math.inf))
    else:
        end = bisect.bisect_left(index.mods, (mod.hi, -math.inf))
    return _Plan("mod", start, max(start, end), residual)


def _pinned_slice(index: SortedIndex, at: float, ids: _Range, residual: list[Predicate]) -> _Plan:
    start = (bisect.bisect_left if ids.lo_incl else bisect.bisect_right)(index.mods, (at, ids.lo))
    end = (bisect.bisect_right if ids.hi_incl else bisect.bisect_left)(index.mods, (at, ids.hi))
    return _Plan("mod", start, max(start, end), residual)


# --- running a search ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    total: int
    ids: list[int]
    next_after: int | None


@dataclass(frozen=True)
class _Sort:
    prop: str
    descending: bool


def search(table: Table, body: Mapping[str, Any], *, ids_as_text: bool = False) -> Page:
    limit, after = _paging(body)
    plans = [_plan(table.index, [_compile(table, f, ids_as_text) for f in group]) for group in _groups(body)]
    query = body.get("query")
    if isinstance(query, str) and query.strip():
        needle = query.strip().lower()
        for plan in plans:
            plan.residual.append(lambda r: any(needle in v.lower() for v in r.values.values()))
            plan.cross = None
    sort = _sort(table, body)
    fast = _fast_order(table, plans, sort)
    if fast is not None:
        total, ids = _walk(table.index, plans, after, limit, reverse=fast)
    elif len(plans) == 1 and plans[0].cross is not None and (sort is None or sort.prop == "hs_object_id"):
        total, ids = _cross(table, plans[0], after, limit, descending=sort is not None and sort.descending)
    else:
        total, ids = _scan(table, plans, sort, after, limit)
    more = after + len(ids) < total and limit > 0
    return Page(total, ids, after + len(ids) if more else None)


def _paging(body: Mapping[str, Any]) -> tuple[int, int]:
    try:
        limit = DEFAULT_LIMIT if body.get("limit") is None else int(body["limit"])
        after = int(body.get("after") or 0)
    except (TypeError, ValueError) as exc:
        raise SearchError() from exc
    if limit < 0 or limit > MAX_LIMIT or after < 0:
        raise SearchError(f"limit must be between 0 and {MAX_LIMIT}")
    if after + limit > MAX_RESULTS:
        raise SearchError()
    return limit, after


def _groups(body: Mapping[str, Any]) -> list[list[Mapping[str, Any]]]:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list):
        raise SearchError()
    filters = [g.get("filters") or [] if isinstance(g, Mapping) else None for g in groups]
    if any(not isinstance(f, list) for f in filters):
        raise SearchError()
    if len(groups) > MAX_FILTER_GROUPS:
        raise SearchError(f"Too many filter groups: {len(groups)}. The maximum is {MAX_FILTER_GROUPS}.")
    counts = [len(f or []) for f in filters]
    if any(n > MAX_FILTERS_PER_GROUP for n in counts) or sum(counts) > MAX_FILTERS:
        raise SearchError(
            f"Too many filters. A search may have up to {MAX_FILTERS_PER_GROUP} filters in each group "
            f"and {MAX_FILTERS} in total."
        )
    return [list(f or []) for f in filters] or [[]]


def _sort(table: Table, body: Mapping[str, Any]) -> _Sort | None:
    sorts = body.get("sorts") or []
    if not isinstance(sorts, list) or not sorts:
        return None
    first = sorts[0]  # HubSpot honours one sort; the others are ignored, as there
    if isinstance(first, str):
        prop, descending = first.lstrip("-"), first.startswith("-")
    elif isinstance(first, Mapping):
        prop = str(first.get("propertyName", ""))
        descending = str(first.get("direction", "ASCENDING")).upper() == "DESCENDING"
    else:
        raise SearchError()
    if table.kind(prop) is None:
        raise SearchError()
    return _Sort(prop, descending)


def _fast_order(table: Table, plans: Sequence[_Plan], sort: _Sort | None) -> bool | None:
    """Whether to walk the index backwards, or None when the index order is not the answer's."""
    if any(p.residual for p in plans) or len({p.key for p in plans}) != 1:
        return None
    if plans[0].key == "id":
        if sort is None:
            return False
        return sort.descending if sort.prop == "hs_object_id" else None
    # (modified, id) order is the answer's only ascending: descending ties must stay in id order.
    if sort is not None and sort.prop == table.modified_prop and not sort.descending:
        return False
    # One modified instant only: its (modified, id) entries are in id order too.
    if sort is not None and sort.prop == "hs_object_id" and not sort.descending and len(plans) == 1:
        mods, start, end = table.index.mods, plans[0].start, plans[0].end
        return False if end <= start or mods[start][0] == mods[end - 1][0] else None
    return None


def _walk(
    index: SortedIndex, plans: Sequence[_Plan], after: int, limit: int, *, reverse: bool
) -> tuple[int, list[int]]:
    spans = _merge((p.start, p.end) for p in plans)
    total = sum(end - start for start, end in spans)
    positions: list[int] = []
    skip = after
    for start, end in reversed(spans) if reverse else spans:
        if len(positions) >= limit:
            break
        if skip >= end - start:
            skip -= end - start
            continue
        take = min(limit - len(positions), end - start - skip)
        if reverse:
            positions.extend(range(end - 1 - skip, end - 1 - skip - take, -1))
        else:
            positions.extend(range(start + skip, start + skip + take))
        skip = 0
    key = plans[0].key
    ids = [index.ids[p] for p in positions] if key == "id" else [index.mods[p][1] for p in positions]
    return total, ids


def _cross(table: Table, plan: _Plan, after: int, limit: int, *, descending: bool) -> tuple[int, list[int]]:
    """Modified since T, in id order, keyset on id: counts on one slice, then walks the id slice only
    as far as the page needs, instead of sorting every match on every page."""
    assert plan.cross is not None
    mod, ids, (id_start, id_end) = plan.cross
    (mod_lo, mod_hi), (id_lo, id_hi) = mod.closed(), ids.closed()
    records, index = table.records, table.index
    if plan.key == "mod":  # the modified slice is the narrower one: take its matches whole
        matched = sorted(i for _, i in index.mods[plan.start : plan.end] if id_lo <= i <= id_hi)
        if descending:
            matched.reverse()
        return len(matched), matched[after : after + limit]
    by_mod = _mod_slice(index, mod, [])
    if by_mod.end - by_mod.start <= 2 * (id_end - id_start):  # tuples are cheaper than lookups
        total = sum(1 for _, i in index.mods[by_mod.start : by_mod.end] if id_lo <= i <= id_hi)
    else:
        total = sum(1 for i in index.ids[id_start:id_end] if mod_lo <= records[i].modified_ms <= mod_hi)
    positions = range(id_end - 1, id_start - 1, -1) if descending else range(id_start, id_end)
    page: list[int] = []
    if limit == 0:
        return total, page
    skip = after
    for position in positions:
        record_id = index.ids[position]
        if not mod_lo <= records[record_id].modified_ms <= mod_hi:
            continue
        if skip:
            skip -= 1
            continue
        page.append(record_id)
        if len(page) >= limit:
            break
    return total, page


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _scan(table: Table, plans: Sequence[_Plan], sort: _Sort | None, after: int, limit: int) -> tuple[int, list[int]]:
    records, index = table.records, table.index
    found: list[list[int]] = []
    for plan in plans:
        if plan.key == "id":
            candidates: Iterable[int] = index.ids[plan.start : plan.end]
        else:
            candidates = (m[1] for m in index.mods[plan.start : plan.end])
        tests = plan.residual
        if len(tests) == 1:  # the common case, without a generator per candidate
            test = tests[0]
            found.append([i for i in candidates if test(records[i])])
        else:
            found.append([i for i in candidates if all(t(records[i]) for t in tests)])
    # One slice of the id index is already in id order; anything else is merged and sorted.
    ordered = found[0] if len(found) == 1 and plans[0].key == "id" else sorted({i for ids in found for i in ids})
    if sort is not None and sort.prop != "hs_object_id":
        get = getter(table, sort.prop)
        valued = [(get(records[i]), i) for i in ordered]
        present = [p for p in valued if p[0] not in (None, "")]
        # A stable sort on the value alone keeps ties in id order, in both directions.
        present.sort(key=lambda p: p[0], reverse=sort.descending)
        ordered = [i for _, i in present] + [i for v, i in valued if v in (None, "")]
    elif sort is not None and sort.descending:
        ordered.reverse()
    return len(ordered), ordered[after : after + limit]
