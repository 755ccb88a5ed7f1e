"""A loopback stand-in for HubSpot's CRM v3 API, driven through the real hubspot-api-client.

Point the client at it with `HubSpot(access_token=sandbox.token, host=sandbox.url)`. Endpoints, with
the hubspot-api-client 12 call that reaches each:

    GET    /crm/v3/objects/{type}                         basic_api.get_page
    POST   /crm/v3/objects/{type}                         basic_api.create
    GET    /crm/v3/objects/{type}/{id}                    basic_api.get_by_id
    PATCH  /crm/v3/objects/{type}/{id}                    basic_api.update
    DELETE /crm/v3/objects/{type}/{id}                    basic_api.archive
    POST   /crm/v3/objects/{type}/search                  search_api.do_search
    POST   /crm/v3/objects/{type}/batch/read              batch_api.read
    POST   /crm/v3/objects/{type}/batch/update            batch_api.update
    GET    /crm/v3/properties/{type}                      crm.properties.core_api.get_all
    GET    /crm/v3/properties/{type}/{name}               crm.properties.core_api.get_by_name
    POST   /crm/v4/associations/{from}/{to}/batch/read    crm.associations.v4.batch_api.get_page
    GET    /crm/v4/objects/{type}/{id}/associations/{to}  crm.associations.v4.basic_api.get_page
    POST   /crm/v3/associations/{from}/{to}/batch/read    crm.associations.batch_api.read

Object types: contacts, companies, emails, meetings, calls (plural, singular or "0-1"-style ids).

The contact of each engagement, for incremental pulls: search the engagements on
`hs_lastmodifieddate`, then read the contacts of that page with one v4 `batch/read` (up to 1,000
ids; an id without a contact comes back in `errors`, as HubSpot's does). Search also filters on
`associations.contact` (EQ, NEQ, IN, NOT_IN, HAS_PROPERTY), and GET list / GET by id take
`associations=contacts`; batch read ignores associations, as HubSpot's does.

HubSpot behaviour mirrored:
  * 401 INVALID_AUTHENTICATION for a missing or wrong bearer token; error bodies carry status,
    message, correlationId and category.
  * Rate limits (developers.hubspot.com/docs/api/usage-details): a rolling `rate_window` limit on
    every call but searches, `search_rate_per_second` on searches, a daily limit (UTC days of
    `clock()`). 429 bodies carry errorType RATE_LIMIT and policyName TEN_SECONDLY_ROLLING, SECONDLY
    or DAILY, and no Retry-After. Responses other than searches carry X-HubSpot-RateLimit-Daily,
    -Daily-Remaining, -Interval-Milliseconds, -Max and -Remaining; search responses carry none.
  * Search: at most 5 filter groups, 6 filters a group, 18 in all; limit <= 200; after + limit past
    10,000 is a 400; one sort (the rest are ignored); archived records are not found.
  * Batch read and update: at most 100 inputs; duplicate ids in an update are a 400; unknown ids and
    injected failures are per-input errors in a 207. A value HubSpot refuses (unknown or read-only
    property, an option that does not exist) fails the whole batch with a 400 VALIDATION_ERROR
    ("Property values were not valid: [...]") and writes nothing: HubSpot validates a request before
    it writes, and a batch is one request.
  * lifecyclestage only moves forward: HubSpot's contacts API notes say an earlier stage needs the
    value cleared ("") first, in a separate request. Sent directly, an earlier stage is answered 200
    and left unchanged (HubSpot's community and legacy docs), which is what a connector must cope
    with; `lifecycle_backwards = "reject"` makes it a 400 VALIDATION_ERROR instead.

Behaving like a real account (docs/crm-behaviour.md gives the source of each):
  * `set_search_lag(L)`: searches see each record as it was L seconds ago (`hubspot_index`); reads by
    id are live. `index_late` makes one record's next change reach search later still.
  * `ids_as_text`: search filters compare hs_object_id as text.
  * Property history (`propertiesWithHistory`, newest first) and `hs_v2_date_entered_<stage>`;
    `backdate` writes a seeded record's past.
  * `merge`: the survivor lists merged-away ids in `hs_merged_object_ids`; reads of an old id answer it.
  * `revoke_scope`: 403 MISSING_SCOPES with the scopes named. `answer_malformed`: a 200 that is not
    HubSpot's JSON. Batch updates answer each record's `updatedAt`.
  * Engagements associate with contacts and companies.
  * `subscribe_webhooks`: changes of contacts and companies go to a target URL as the app's signed,
    batched, retried webhooks (`hubspot_webhooks`).

The stand-in's own choices, where HubSpot documents no answer: the 10,000-cap body is HubSpot's
generic "There was a problem with the request."; the >100-inputs message follows HubSpot's wording
for its 50-input property-history cap; GET list refuses limit > 100 rather than clamping it; a write
moves the modified date whenever it applies a property, even to the value it had; EQ on text is
exact; without sorts, searches come back in id order.
"""

from __future__ import annotations

import bisect
import json
import random
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Literal, Self

from connector.sandbox._http import LoopbackServer, Request, Response
from connector.sandbox.hubspot_index import SearchView
from connector.sandbox.hubspot_model import (
    ALIASES,
    ASSOCIATION_TYPES,
    ENGAGEMENTS,
    LEAD_STATUSES,
    LIFECYCLE_STAGES,
    READ_SCOPES,
    SINGULAR,
    ObjectTable,
    PropertyDef,
    build_tables,
    normalise,
    write_scope,
)
from connector.sandbox.hubspot_search import (
    Record,
    SearchError,
    dt_to_ms,
    ms_to_iso,
    search,
    to_ms,
)
from connector.sandbox.hubspot_webhooks import Subscription, WebhookSender

__all__ = ["LEAD_STATUSES", "LIFECYCLE_STAGES", "HubSpotSandbox", "PropertyDef"]

MAX_BATCH = 100
MAX_HISTORY_BATCH = 50
MAX_ASSOCIATION_BATCH = 1000
MAX_PAGE = 100
_FIRST_ID = 1001
_PORTAL_ID = 4_000_000

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
NOT_FOUND_MESSAGE = "Object not found.  objectId are usually numeric."
_STATUS_OF_CATEGORY = {
    "OBJECT_NOT_FOUND": 404,
    "CONFLICT": 409,
    "LOCKED": 423,
    "RATE_LIMITS": 429,
    "INVALID_AUTHENTICATION": 401,
    "MISSING_SCOPES": 403,
}


# --- errors --------------------------------------------------------------------------------------
class _ApiError(Exception):
    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR", **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.category, self.extra = status, message, category, extra


def _invalid_entry(name: str, message: str, code: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": code, "name": name, "localizedErrorMessage": message}


def _invalid(entries: list[dict[str, Any]]) -> _ApiError:
    return _ApiError(400, "Property values were not valid: " + json.dumps(entries, separators=(",", ":")))


def _batch_error(category: str, message: str, ids: list[str], **extra: Any) -> dict[str, Any]:
    context = extra.pop("context", {"ids": ids})
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "links": {},
        "errors": [],
        **extra,
    }


_SOURCE_IDS = {
    "API": "sandbox-private-app",
    "CRM_UI": "userId:4000001",
    "IMPORT": "import:1",
    "CALCULATED": "CalculatedPropertyComputer",  # HubSpot's own recalculation (`recalculate`)
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Failure:
    category: str
    message: str
    times: int


# --- the stand-in --------------------------------------------------------------------------------
class HubSpotSandbox:
    """HubSpot's CRM API on 127.0.0.1: state, rate limits and failures a test can steer. Thread-safe."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        rate_limit: int = 100,
        rate_window: float = 10.0,
        search_rate_per_second: int = 5,
        daily_limit: int = 1_000_000,
        token: str = "sandbox-private-app-token",
        seed: int = 0,
    ) -> None:
        self.token = token
        self.rate_limit = rate_limit  # per rolling rate_window, over every call but searches; 0: none
        self.rate_window = rate_window
        self.search_rate_per_second = search_rate_per_second
        self.daily_limit = daily_limit
        self.lifecycle_backwards: Literal["ignore", "reject"] = "ignore"
        self.search_lag = 0.0  # seconds a change takes to reach search; see set_search_lag
        # Whether search filters compare hs_object_id as text ("10" > "9" is false), as a public
        # connector's tests record of HubSpot; sorting by it stays numeric.
        self.ids_as_text = False
        self._late: dict[tuple[str, int], float] = {}
        self._revoked: set[tuple[str, bool]] = set()  # (object type, write) the app has no scope for
        # (type, id) -> property -> [(value, ms, sourceType)], oldest first: propertiesWithHistory
        self._history: dict[tuple[str, int], dict[str, list[tuple[str | None, int, str]]]] = {}
        self.clock: Callable[[], datetime] = _utcnow
        # Seconds for the rate-limit windows; a test may replace it to step time instead of sleeping.
        self.timer: Callable[[], float] = time.monotonic
        self.rate_limited_count = 0
        self.server = LoopbackServer(self._handle, latency=latency)
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._tables = build_tables()
        self._next_id = _FIRST_ID
        self._writes: list[tuple[str, str, dict[str, Any]]] = []
        self._failures: dict[int, _Failure] = {}
        self._window: deque[float] = deque()
        self._search_window: deque[float] = deque()
        self._accepted: list[float] = []
        self._webhooks: WebhookSender | None = None  # see subscribe_webhooks
        self._echo_api_writes = True
        self._day: date | None = None
        self._day_count = 0
        pattern = re.compile
        obj, one = r"/crm/v3/objects/([^/]+)", r"/crm/v3/objects/([^/]+)/([^/]+)"
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response], bool]] = [
            ("POST", pattern(obj + "/search"), self._search, True),
            ("POST", pattern(obj + "/batch/read"), self._batch_read, False),
            ("POST", pattern(obj + "/batch/update"), self._batch_update, False),
            ("GET", pattern(obj), self._list, False),
            ("POST", pattern(obj), self._create, False),
            ("GET", pattern(one), self._get, False),
            ("PATCH", pattern(one), self._update, False),
            ("DELETE", pattern(one), self._delete, False),
            ("GET", pattern(r"/crm/v3/properties/([^/]+)"), self._properties, False),
            ("GET", pattern(r"/crm/v3/properties/([^/]+)/([^/]+)"), self._property, False),
            ("POST", pattern(r"/crm/v4/associations/([^/]+)/([^/]+)/batch/read"), self._links_v4, False),
            ("GET", pattern(r"/crm/v4/objects/([^/]+)/([^/]+)/associations/([^/]+)"), self._links_page, False),
            ("POST", pattern(r"/crm/v3/associations/([^/]+)/([^/]+)/batch/read"), self._links_v3, False),
        ]

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, port: int = 0) -> None:
        self.server.start(port)

    def stop(self) -> None:
        self.unsubscribe_webhooks()
        self.server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def reset(self) -> None:
        """Empties the portal: records, write log, injected failures, rate-limit state, call log."""
        with self._lock:
            self._tables = build_tables()
            self._next_id = _FIRST_ID
            self._writes.clear()
            self._failures.clear()
            self._window.clear()
            self._search_window.clear()
            self._accepted.clear()
            self._day, self._day_count = None, 0
            self.rate_limited_count = 0
            self.search_lag = 0.0
            self._late.clear()
            self._history.clear()
            self._revoked.clear()
            self.ids_as_text = False
        self.server.reset_calls()

    # --- steering the portal from a test ---------------------------------------------------------
    def seed(
        self, object_type: str, records: list[dict[str, Any]], *, modified_at: datetime | None = None
    ) -> list[str]:
        """Creates records in bulk, without API calls. A record may give its own create and modified
        dates under the type's date property names; the rest get `modified_at` (default: clock())."""
        table = self._table(object_type, api=False)
        # Plain text and valid options need no normalising: checking them inline keeps 100,000 fast.
        plain = {
            n: p.option_values
            for n, p in table.schema.items()
            if (p.type == "string" or (p.type == "enumeration" and not p.external_options)) and not p.read_only
        }
        with self._lock:
            now = dt_to_ms(modified_at) if modified_at is not None else self._now_ms()
            made: list[Record] = []
            links: list[tuple[int, str, int]] = []
            for raw in records:
                values = dict(raw)
                created = _ms_of(values.pop(table.created_prop, None), now)
                modified = _ms_of(values.pop(table.modified_prop, None), now)
                owners = {o: values.pop(f"associations.{SINGULAR[o]}", None) for o in ("contacts", "companies")}
                if any(v is not None for v in owners.values()) and table.name not in ENGAGEMENTS:
                    raise ValueError("only engagements take associations.contact or associations.company")
                ready = all(
                    isinstance(v, str) and v and (k in plain and (not plain[k] or v in plain[k]))
                    for k, v in values.items()
                )
                record = Record(self._take_id(), values if ready else self._checked(table, values), created, modified)
                made.append(record)
                for owner, given in owners.items():
                    for to_id in given if isinstance(given, list) else [] if given is None else [given]:
                        if int(to_id) not in self._tables[owner].records:
                            raise KeyError(f"no {SINGULAR[owner]} {to_id}")
                        links.append((record.id, owner, int(to_id)))
            table.records.update((r.id, r) for r in made)
            table.index.add_many(made)
            for record in made:
                self._indexed(table, record)
            if self._webhooks is not None:
                for record in made:
                    self._event(table, "creation", record.id, "CRM_UI")
            for record_id, owner, to_id in links:
                self._link(table.name, record_id, to_id, owner)
        return [str(r.id) for r in made]

    def backdate(self, object_type: str, record_id: str, changes: Sequence[tuple[str, str, datetime]]) -> None:
        """Past edits of a seeded record, oldest first, as (property, value, when): they become its
        property history (and lifecycle entry dates), and its values if later than what it holds.
        Its modified date is not touched: seed it with the date of its last change."""
        table = self._table(object_type, api=False)
        with self._lock:
            record = table.records[int(record_id)]
            for name, value, when in changes:
                checked = self._checked(table, {name: value})
                self._remember(table, record, {name: checked.get(name)}, dt_to_ms(when), "CRM_UI")
                record.values.update(checked)

    def skip_ids(self, count: int) -> None:
        """The next ids come `count` later, as in a portal whose records were also made elsewhere."""
        with self._lock:
            self._next_id += count

    def set_search_lag(self, seconds: float) -> None:
        """Searches see each record as it was `seconds` ago (values, modified date, existence), while
        reads by id stay live: HubSpot's search index lag. What exists now is already searchable."""
        with self._lock:
            self.search_lag = seconds
            now = self._now_ms()
            for table in self._tables.values():
                if table.view is None:
                    table.view = SearchView(table)
                    for record in table.records.values():
                        table.view.note(record, now)

    def index_late(self, object_type: str, record_id: str, seconds: float) -> None:
        """The record's next change reaches search `seconds` later than the lag: indexed behind newer ones."""
        table = self._table(object_type, api=False)
        with self._lock:
            self.set_search_lag(self.search_lag)
            self._late[(table.name, int(record_id))] = seconds

    def _indexed(self, table: ObjectTable, record: Record) -> None:
        """Queues the record as it is now for the search index."""
        if table.view is None:
            return
        extra = self._late.pop((table.name, record.id), 0.0)
        stamp = record.archived_ms if record.archived_ms is not None else record.modified_ms
        table.view.note(record, stamp + round((self.search_lag + extra) * 1000))

    def merge(self, object_type: str, primary_id: str, merged_id: str) -> None:
        """A person merges `merged_id` into `primary_id` (HubSpot's "merge records"). The survivor keeps
        its values, takes the other's where it has none, lists the merged-away ids in
        `hs_merged_object_ids` (";"-separated) and is modified now; the merged-away id leaves lists
        and searches, is not archived, and a GET or batch read of it answers the survivor."""
        table = self._table(object_type, api=False)
        with self._lock:
            primary, gone = table.records[int(primary_id)], table.records.pop(int(merged_id))
            if gone.archived_ms is None:
                table.index.remove(gone)
            for old, survivor in list(table.merged.items()):
                if survivor == gone.id:
                    table.merged[old] = primary.id
            table.merged[gone.id] = primary.id
            ids = [i for i in (primary.values.get("hs_merged_object_ids") or "").split(";") if i]
            ids += [str(gone.id), *(i for i in (gone.values.get("hs_merged_object_ids") or "").split(";") if i)]
            values: dict[str, str | None] = {k: v for k, v in gone.values.items() if k not in primary.values}
            values["hs_merged_object_ids"] = ";".join(dict.fromkeys(ids))
            for kind, links in table.links.items():
                moved = links.pop(gone.id, [])
                links.setdefault(primary.id, []).extend(i for i in moved if i not in links.get(primary.id, []))
                back = self._tables[kind].links.get(table.name, {})
                for engagement in moved:
                    back[engagement] = [primary.id if i == gone.id else i for i in back.get(engagement, [])]
            if table.view is not None:
                gone.archived_ms = self._now_ms()  # leaves the search index like an archived record
                self._indexed(table, gone)
                gone.archived_ms = None
            self._apply(table, primary, values)
            self._event(table, "deletion", gone.id, "CRM_UI")  # for each secondary (docs/crm-behaviour.md)
            self._event(
                table, "merge", primary.id, "CRM_UI", primaryObjectId=primary.id, mergedObjectIds=[gone.id],
                newObjectId=primary.id, numberOfPropertiesMoved=len(values) - 1,
            )  # fmt: skip

    def edit_as_person(self, object_type: str, record_id: str, **properties: Any) -> None:
        """A user's edit in HubSpot's UI: options are checked, lifecyclestage may move backwards."""
        table = self._table(object_type, api=False)
        with self._lock:
            record = table.records[int(record_id)]
            self._apply(table, record, self._checked(table, properties), "CRM_UI")

    def subscribe_webhooks(
        self,
        target_url: str,
        app_secret: str,
        subscriptions: Iterable[Subscription | tuple[str, str | None] | tuple[str, str | None, str]],
        *,
        delay: float = 0.0,
        retries: int = 3,
        backoff: float = 0.05,
        timeout: float = 2.0,
        echo_api_writes: bool = True,
    ) -> WebhookSender:
        """From now on, changes of contacts and companies are POSTed to `target_url` as HubSpot's signed
        webhooks, e.g. `[("contact.propertyChange", "hs_lead_status"), ("contact.creation", None)]`
        (see hubspot_webhooks). `echo_api_writes=False` leaves out property changes made through the API.
        Replaces an earlier subscription; `stop()` or `unsubscribe_webhooks()` ends it."""
        self.unsubscribe_webhooks()
        sender = WebhookSender(
            target_url, app_secret, subscriptions, portal_id=_PORTAL_ID, delay=delay, retries=retries,
            backoff=backoff, timeout=timeout, wall_ms=lambda: time.time_ns() // 1_000_000,
        )  # fmt: skip
        with self._lock:
            self._webhooks, self._echo_api_writes = sender, echo_api_writes
        return sender

    def unsubscribe_webhooks(self) -> None:
        with self._lock:
            sender, self._webhooks = self._webhooks, None
        if sender is not None:
            sender.stop()

    def recalculate(self, object_type: str, record_id: str, **properties: Any) -> None:
        """HubSpot's own change of calculated properties (`hubspotscore` after its scoring rules ran):
        read-only to people and apps, but a change to the record like any other."""
        table = self._table(object_type, api=False)
        with self._lock:
            record = table.records[int(record_id)]
            values = {}
            for name, raw in properties.items():
                value, problem = normalise(table.schema[name], raw)
                if problem is not None:
                    raise ValueError(problem[0])
                values[name] = value
            self._apply(table, record, values, "CALCULATED")

    def record(self, object_type: str, record_id: str) -> dict[str, Any]:
        table = self._table(object_type, api=False)
        with self._lock:
            record = table.records[int(record_id)]
            values: dict[str, Any] = dict(record.values)
            values.update((name, self._value(table, record, name)) for name in table.always)
            return values

    def archive(self, object_type: str, record_id: str) -> None:
        table = self._table(object_type, api=False)
        with self._lock:
            self._archive(table, table.records[int(record_id)])

    def add_engagement(
        self,
        kind: str,
        contact_id: str,
        properties: dict[str, Any],
        *,
        at: datetime | None = None,
        on: str = "contacts",
    ) -> str:
        """Logs an email, meeting or call on a contact (or, with `on="companies"`, on the company of that
        id). `at` is its hs_timestamp (default: clock()); it is created, and so modified, at clock(),
        which is when an incremental pull sees it."""
        if kind not in ENGAGEMENTS:
            raise ValueError(f"kind must be one of {ENGAGEMENTS}, not {kind!r}")
        table = self._tables[kind]
        with self._lock:
            if int(contact_id) not in self._tables[on].records:
                raise KeyError(f"no {SINGULAR[on]} {contact_id}")
            now = self._now_ms()
            values = {"hs_timestamp": ms_to_iso(dt_to_ms(at) if at is not None else now), **properties}
            record = Record(self._take_id(), self._checked(table, values), now, now)
            table.records[record.id] = record
            table.index.add(record)
            self._indexed(table, record)
            self._link(kind, record.id, int(contact_id), on)
            return str(record.id)

    def add_option(self, object_type: str, property_name: str, value: str, label: str | None = None) -> None:
        """An admin adds an option to an enumeration (say, a lead status nobody mapped yet)."""
        table = self._table(object_type, api=False)
        with self._lock:
            prop = table.schema[property_name]
            table.schema[property_name] = replace(prop, options=(*prop.options, (value, label or value)))

    def fail_writes(self, record_ids: Iterable[str], category: str, message: str, times: int = 1) -> None:
        """The next `times` API writes to each record fail with HubSpot's error shape: a per-input
        error in a batch update (207), the error itself for a single PATCH."""
        with self._lock:
            for record_id in record_ids:
                self._failures[int(record_id)] = _Failure(category, message, times)

    def writes(self, object_type: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(id, properties) of every API write HubSpot acknowledged, in order, values normalised as
        stored ("" for a cleared one), including an earlier lifecyclestage HubSpot kept out."""
        with self._lock:
            wanted = None if object_type is None else self._table(object_type, api=False).name
            return [(rid, dict(props)) for kind, rid, props in self._writes if wanted in (None, kind)]

    def calls_per_window(self) -> list[int]:
        """Calls counted by the rolling limit, in consecutive `rate_window`s from the first one:
        max(...) / rate_limit is the share of the burst limit a run used at its busiest."""
        with self._lock:
            if not self._accepted or self.rate_window <= 0:
                return []
            first = self._accepted[0]
            counts = [0] * (int((self._accepted[-1] - first) / self.rate_window) + 1)
            for at in self._accepted:
                counts[int((at - first) / self.rate_window)] += 1
            return counts

    def peak_rolling_calls(self) -> int:
        """The most calls counted by the rolling limit in any `rate_window` (what HubSpot checks)."""
        with self._lock:
            peak, start = 0, 0
            for end, at in enumerate(self._accepted):
                while at - self._accepted[start] >= self.rate_window:
                    start += 1
                peak = max(peak, end - start + 1)
            return peak

    # --- dispatch --------------------------------------------------------------------------------
    def _handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(401, AUTH_MESSAGE, "INVALID_AUTHENTICATION")
        route = self._route(request)
        if route is None:
            return self._error(404, f"No route for {request.method} {request.path}", "OBJECT_NOT_FOUND")
        handler, args, is_search = route
        refused, headers = self._admit(is_search)
        if refused is not None:
            return refused
        try:
            self._check_scopes(request, handler, args)
            response = handler(request, *args)
        except _ApiError as exc:
            response = self._error(exc.status, exc.message, exc.category, **exc.extra)
        response.headers.update(headers)
        return response

    def _route(self, request: Request) -> tuple[Callable[..., Response], tuple[str, ...], bool] | None:
        for method, pattern, handler, is_search in self._routes:
            match = pattern.fullmatch(request.path)
            if match is not None and method == request.method:
                return handler, match.groups(), is_search
        return None

    def answer_malformed(self, kind: str, times: int = 1) -> None:
        """The next `times` calls answer 200 with what a proxy or a cut connection delivers instead of
        HubSpot's JSON: an HTML page, JSON cut short, or JSON of another shape (no `results`)."""
        bodies = {
            "html": b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>",
            "truncated": b'{"total": 3, "results": [{"id": "1001", "properties": {"email": "p0@exa',
            "shape": b'{"status": "COMPLETE", "data": []}',
        }
        if kind not in bodies:
            raise ValueError(f"kind must be one of {sorted(bodies)}, not {kind!r}")
        self.server.faults.queue(Response(200, bodies[kind]), times)

    # --- scopes ----------------------------------------------------------------------------------
    def revoke_scope(self, object_type: str, *, write: bool = False) -> None:
        """The private app lacks the scope to read (or, `write=True`, to write) this object type: its
        calls answer 403 MISSING_SCOPES, as HubSpot's do (see `_check_scopes`)."""
        with self._lock:
            self._revoked.add((self._table(object_type, api=False).name, write))

    def _check_scopes(self, request: Request, handler: Callable[..., Response], args: tuple[str, ...]) -> None:
        """HubSpot's 403 for a private app without a scope the call needs (hubspot-api-nodejs#268
        records the body: a generic message, `errors[].context` naming the scopes, category
        MISSING_SCOPES); newer answers name granular scopes (`requiredGranularScopes`)."""
        if not self._revoked or handler in (self._properties, self._property):
            return
        writes = handler in (self._batch_update, self._create, self._update, self._delete)
        types = args[:2] if handler in (self._links_v4, self._links_v3) else args[:1]
        for raw in types:
            name = ALIASES.get(raw.lower())
            if name is not None and ((name, writes) in self._revoked or (name, False) in self._revoked):
                needed = READ_SCOPES[name] if (name, False) in self._revoked else [write_scope(name)]
                raise _ApiError(
                    403,
                    "This app hasn't been granted all required scopes to make this call. "
                    "Read more about required scopes here: https://developers.hubspot.com/scopes.",
                    "MISSING_SCOPES",
                    errors=[
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": needed},
                        }
                    ],
                    links={"scopes": "https://developers.hubspot.com/scopes"},
                )

    def _error(self, status: int, message: str, category: str, **extra: Any) -> Response:
        body = {"status": "error", "message": message, "correlationId": self._correlation_id(), **extra}
        body["category"] = category
        return Response(status, body)

    def _correlation_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # --- rate limits -----------------------------------------------------------------------------
    def _admit(self, is_search: bool) -> tuple[Response | None, dict[str, str]]:
        """Counts a call against the token's limits, or refuses it as HubSpot does."""
        with self._lock:
            now = self.timer()
            today = self.clock().date()
            if today != self._day:
                self._day, self._day_count = today, 0
            window, limit, span = (
                (self._search_window, self.search_rate_per_second, 1.0)
                if is_search
                else (self._window, self.rate_limit, self.rate_window)
            )
            while window and window[0] <= now - span:
                window.popleft()
            policy = None
            if self.daily_limit and self._day_count >= self.daily_limit:
                policy = "DAILY"
            elif limit and len(window) >= limit:
                policy = "SECONDLY" if is_search else "TEN_SECONDLY_ROLLING"
            else:
                window.append(now)
                self._day_count += 1
                if not is_search:
                    self._accepted.append(now)
            headers = {} if is_search else self._rate_headers()
            if policy is None:
                return None, headers
            self.rate_limited_count += 1
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": self._correlation_id(),
            "policyName": policy,
            "groupName": f"privateapp:{_PORTAL_ID}",
        }
        return Response(429, body, headers=headers), headers

    def _rate_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.daily_limit:
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(0, self.daily_limit - self._day_count))
        if self.rate_limit:
            headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(int(self.rate_window * 1000))
            headers["X-HubSpot-RateLimit-Max"] = str(self.rate_limit)
            headers["X-HubSpot-RateLimit-Remaining"] = str(max(0, self.rate_limit - len(self._window)))
        return headers

    # --- objects ---------------------------------------------------------------------------------
    def _list(self, request: Request, type_name: str) -> Response:
        table = self._table(type_name)
        limit = _int_param(request, "limit", 10, 1, MAX_PAGE)
        after = _int_param(request, "after", 0, 0, None)
        props, links = _list_param(request, "properties"), _list_param(request, "associations")
        with self._lock:
            if _bool_param(request, "archived"):
                ids = sorted(i for i, r in table.records.items() if r.archived_ms is not None)
            else:
                ids = table.index.ids
            start = bisect.bisect_left(ids, after)
            results = [self._object(table, table.records[i], props, links) for i in ids[start : start + limit]]
            following = ids[start + limit] if start + limit < len(ids) else None
        body: dict[str, Any] = {"results": results}
        if following is not None:
            link = f"{self.url}/crm/v3/objects/{table.name}?after={following}&limit={limit}"
            body["paging"] = {"next": {"after": str(following), "link": link}}
        return Response(200, body, records=len(results))

    def _get(self, request: Request, type_name: str, raw_id: str) -> Response:
        table = self._table(type_name)
        props, links = _list_param(request, "properties"), _list_param(request, "associations")
        with self._lock:
            record = self._find(
                table, raw_id, request.param("idProperty"), _bool_param(request, "archived"), read=True
            )
            if record is None:
                raise _ApiError(404, NOT_FOUND_MESSAGE, "OBJECT_NOT_FOUND", context={"id": [raw_id]})
            return Response(200, self._object(table, record, props, links), records=1)

    def _create(self, request: Request, type_name: str) -> Response:
        table = self._table(type_name)
        body = _json_object(request)
        values = self._validated(table, body.get("properties") or {})
        with self._lock:
            links = self._links_of(table, body.get("associations") or [])
            now = self._now_ms()
            record = Record(self._take_id(), {k: v for k, v in values.items() if v is not None}, now, now)
            table.records[record.id] = record
            table.index.add(record)
            self._indexed(table, record)
            for target, to_id in links:
                if table.name in ENGAGEMENTS:
                    self._link(table.name, record.id, to_id, target)
                else:
                    self._link(target, to_id, record.id, table.name)
            self._writes.append((table.name, str(record.id), _stored(values)))
            self._event(table, "creation", record.id, "API")
            return Response(201, self._object(table, record, list(values)), records=1)

    def _update(self, request: Request, type_name: str, raw_id: str) -> Response:
        table = self._table(type_name)
        body = _json_object(request)
        values = self._validated(table, body.get("properties"))
        with self._lock:
            record = self._find(table, raw_id, request.param("idProperty"), False)
            if record is None:
                raise _ApiError(404, NOT_FOUND_MESSAGE, "OBJECT_NOT_FOUND", context={"id": [raw_id]})
            failure = self._take_failure(record.id)
            if failure is not None:
                raise _ApiError(_STATUS_OF_CATEGORY.get(failure.category, 400), failure.message, failure.category)
            self._write(table, record, values)
            return Response(200, self._object(table, record, list(values)), records=1)

    def _delete(self, request: Request, type_name: str, raw_id: str) -> Response:
        table = self._table(type_name)
        with self._lock:
            record = self._find(table, raw_id, None, False)
            if record is not None:
                self._archive(table, record, "API")
        return Response(204, records=0 if record is None else 1)

    def _search(self, request: Request, type_name: str) -> Response:
        table = self._table(type_name)
        body = _json_object(request)
        props = body.get("properties") or None
        with self._lock:
            searched: ObjectTable | SearchView = table
            if table.view is not None:
                table.view.catch_up(self._now_ms())
                searched = table.view
            try:
                page = search(searched, body, ids_as_text=self.ids_as_text)
            except SearchError as exc:
                raise _ApiError(400, exc.message, exc.category) from exc
            results = [self._object(table, searched.records[i], props) for i in page.ids]
        answer: dict[str, Any] = {"total": page.total, "results": results}
        if page.next_after is not None:
            answer["paging"] = {"next": {"after": str(page.next_after)}}
        return Response(200, answer, records=len(results))

    # --- batches ---------------------------------------------------------------------------------
    def _batch_read(self, request: Request, type_name: str) -> Response:
        table = self._table(type_name)
        body = _json_object(request)
        inputs = _inputs(body, MAX_BATCH)
        history = [str(p) for p in body.get("propertiesWithHistory") or []]
        if history and len(inputs) > MAX_HISTORY_BATCH:
            raise _ApiError(
                400,
                "The maximum number of inputs supported in a batch request for property histories is "
                f"{MAX_HISTORY_BATCH}. Please reduce the number of items and try again",
            )
        props = body.get("properties") or None
        started = ms_to_iso(self._now_ms())
        results, missing, seen = [], [], set()
        with self._lock:
            for raw_id in (str(i.get("id")) for i in inputs):
                record = self._find(
                    table, raw_id, body.get("idProperty"), _bool_param(request, "archived"), read=True
                )
                if record is None:
                    missing.append(raw_id)
                elif record.id not in seen:
                    seen.add(record.id)
                    results.append(self._object(table, record, props, history=history))
        errors = [self._not_found(table, missing)] if missing else []
        return self._batch_answer(results, errors, started)

    def _batch_update(self, request: Request, type_name: str) -> Response:
        table = self._table(type_name)
        inputs = _inputs(_json_object(request), MAX_BATCH)
        ids = [str(i.get("id")) for i in inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise _ApiError(
                400,
                f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique",
                context={"ids": duplicates},
            )
        problems: list[dict[str, Any]] = []
        writes = []
        for raw_id, item in zip(ids, inputs, strict=True):
            values, errors = self._check(table, item.get("properties"))
            problems.extend(errors)
            writes.append((raw_id, values))
        if problems:
            raise _invalid(problems)  # nothing is written: HubSpot validates the whole batch first
        started = ms_to_iso(self._now_ms())
        with self._lock:
            results, missing, failed = self._apply_batch(table, writes, request.param("idProperty"))
        errors = [self._not_found(table, missing)] if missing else []
        errors += [_batch_error(category, message, rids) for (category, message), rids in failed.items()]
        return self._batch_answer(results, errors, started)

    def _apply_batch(
        self, table: ObjectTable, writes: list[tuple[str, dict[str, str | None]]], id_property: str | None
    ) -> tuple[list[dict[str, Any]], list[str], dict[tuple[str, str], list[str]]]:
        found = [(raw_id, self._find(table, raw_id, id_property, False), values) for raw_id, values in writes]
        for _, record, values in found:
            if record is not None:
                self._refuse_backwards(table, record, values)  # "reject" refuses the whole batch
        results, missing, failed = [], [], defaultdict(list)
        for raw_id, record, values in found:
            failure = self._take_failure(record.id) if record is not None else None
            if record is None:
                missing.append(raw_id)
            elif failure is not None:
                failed[(failure.category, failure.message)].append(raw_id)
            else:
                self._write(table, record, values)
                results.append(self._object(table, record, list(values)))
        return results, missing, failed

    def _batch_answer(self, results: list[dict[str, Any]], errors: list[dict[str, Any]], started: str) -> Response:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": ms_to_iso(self._now_ms()),
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        return Response(207 if errors else 200, body, records=len(results))

    def _not_found(self, table: ObjectTable, ids: list[str]) -> dict[str, Any]:
        message = (
            f"Could not get some {table.singular.upper()} objects, they may be deleted or not exist. "
            "Check that ids are valid."
        )
        return _batch_error("OBJECT_NOT_FOUND", message, ids)

    # --- properties ------------------------------------------------------------------------------
    def _properties(self, request: Request, type_name: str) -> Response:
        table = self._table(type_name)
        with self._lock:
            results = [p.to_json() for p in table.schema.values()]
        return Response(200, {"results": results}, records=len(results))

    def _property(self, request: Request, type_name: str, name: str) -> Response:
        table = self._table(type_name)
        with self._lock:
            prop = table.schema.get(name)
        if prop is None:
            raise _ApiError(404, f"Property {name} does not exist", "OBJECT_NOT_FOUND")
        return Response(200, prop.to_json(), records=1)

    # --- associations ----------------------------------------------------------------------------
    def _links_v4(self, request: Request, from_name: str, to_name: str) -> Response:
        return self._links_batch(request, from_name, to_name, v4=True)

    def _links_v3(self, request: Request, from_name: str, to_name: str) -> Response:
        return self._links_batch(request, from_name, to_name, v4=False)

    def _links_batch(self, request: Request, from_name: str, to_name: str, *, v4: bool) -> Response:
        source, target = self._table(from_name), self._table(to_name)
        inputs = _inputs(_json_object(request), MAX_ASSOCIATION_BATCH)
        started = ms_to_iso(self._now_ms())
        results, errors = [], []
        with self._lock:
            links = source.links.get(target.name, {})
            for raw_id in (str(i.get("id")) for i in inputs):
                to_ids = links.get(int(raw_id), []) if raw_id.isdigit() else []
                if to_ids:
                    results.append({"from": {"id": raw_id}, "to": self._link_items(source, target, to_ids, v4)})
                    continue
                message = f"No {target.singular} is associated with {source.singular} {raw_id}."
                errors.append(
                    _batch_error(
                        "OBJECT_NOT_FOUND",
                        message,
                        [],
                        context={"fromObjectId": [raw_id]},
                        subCategory="crm.associations.NO_ASSOCIATIONS_FOUND",
                    )
                )
        return self._batch_answer(results, errors, started)

    def _links_page(self, request: Request, type_name: str, raw_id: str, to_name: str) -> Response:
        source, target = self._table(type_name), self._table(to_name)
        with self._lock:
            to_ids = source.links.get(target.name, {}).get(int(raw_id), []) if raw_id.isdigit() else []
            results = self._link_items(source, target, to_ids, True) if to_ids else []
        return Response(200, {"results": results}, records=len(results))

    def _link_items(
        self, source: ObjectTable, target: ObjectTable, to_ids: list[int], v4: bool
    ) -> list[dict[str, Any]]:
        type_id, label = ASSOCIATION_TYPES[(source.name, target.name)]
        if not v4:
            return [{"id": str(i), "type": label} for i in to_ids]
        kinds = [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]
        return [{"toObjectId": i, "associationTypes": kinds} for i in to_ids]

    def _link(self, engagement: str, engagement_id: int, to_id: int, owner: str = "contacts") -> None:
        self._tables[engagement].links[owner].setdefault(engagement_id, []).append(to_id)
        self._tables[owner].links[engagement].setdefault(to_id, []).append(engagement_id)

    def _links_of(self, table: ObjectTable, specs: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
        """The (type, id) pairs a create request's `associations` name; refuses what does not exist."""
        found = []
        for spec in specs:
            to_id = str(spec.get("to", {}).get("id"))
            for kind in spec.get("types") or []:
                wanted = kind.get("associationTypeId")
                target = next(
                    (t for (f, t), (n, _) in ASSOCIATION_TYPES.items() if f == table.name and n == wanted), None
                )
                if target is None or not to_id.isdigit() or int(to_id) not in self._tables[target].records:
                    raise _ApiError(400, f"Invalid association of type {wanted} to {to_id}")
                found.append((target, int(to_id)))
        return found

    # --- shared pieces ---------------------------------------------------------------------------
    def _table(self, name: str, *, api: bool = True) -> ObjectTable:
        canonical = ALIASES.get(name.lower())
        if canonical is None:
            if not api:
                raise KeyError(f"unknown object type {name!r}")
            raise _ApiError(400, f"Unable to infer object type from: {name}")
        return self._tables[canonical]

    def _find(
        self, table: ObjectTable, raw_id: str, id_property: str | None, archived: bool, *, read: bool = False
    ) -> Record | None:
        """The record an input names; a read of a merged-away id finds the survivor, as HubSpot's does."""
        if id_property in (None, "", "hs_object_id"):
            key = int(raw_id) if raw_id.isdigit() else None
            if read and key is not None and key not in table.records:
                key = table.merged.get(key, key)
            record = table.records.get(key) if key is not None else None
        elif table.schema.get(id_property) is not None and id_property == "email":
            record = next((r for r in table.records.values() if r.values.get("email") == raw_id), None)
        else:
            raise _ApiError(400, f"Unable to perform update/upsert by non-unique {table.type_id} property")
        if record is None or (record.archived_ms is not None) != archived:
            return None
        return record

    def _object(
        self,
        table: ObjectTable,
        record: Record,
        props: Sequence[str] | None,
        links: Sequence[str] | None = None,
        history: Sequence[str] = (),
    ) -> dict[str, Any]:
        names = [*(props if props is not None else table.defaults), *table.always]
        out: dict[str, Any] = {
            "id": str(record.id),
            "properties": {n: self._value(table, record, n) for n in names if n in table.schema},
            "createdAt": ms_to_iso(record.created_ms),
            "updatedAt": ms_to_iso(record.modified_ms),
            "archived": record.archived_ms is not None,
        }
        if record.archived_ms is not None:
            out["archivedAt"] = ms_to_iso(record.archived_ms)
        if history:
            kept = self._history.get((table.name, record.id), {})
            out["propertiesWithHistory"] = {
                n: [
                    {"value": v or "", "timestamp": ms_to_iso(ms), "sourceType": src, "sourceId": _SOURCE_IDS[src]}
                    for v, ms, src in reversed(kept.get(n, []))
                ]
                for n in history
                if n in table.schema
            }
        associations = {}
        for to_name in links or []:
            target = ALIASES.get(to_name.lower())
            to_ids = table.links.get(target or "", {}).get(record.id)
            if target is not None and to_ids:
                associations[target] = {"results": self._link_items(table, self._tables[target], to_ids, False)}
        if associations:
            out["associations"] = associations
        return out

    def _value(self, table: ObjectTable, record: Record, name: str) -> str | None:
        if name == "hs_object_id":
            return str(record.id)
        if name == table.created_prop:
            return ms_to_iso(record.created_ms)
        if name == table.modified_prop:
            return ms_to_iso(record.modified_ms)
        return record.values.get(name)

    def _check(self, table: ObjectTable, props: Any) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
        if not isinstance(props, Mapping):
            raise _ApiError(400, "Invalid input JSON: properties must be an object")
        values: dict[str, str | None] = {}
        errors: list[dict[str, Any]] = []
        for name, raw in props.items():
            prop = table.schema.get(name)
            if prop is None:
                errors.append(_invalid_entry(name, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST"))
            elif prop.read_only:
                message = f'"{name}" is a read only property; its value cannot be set.'
                errors.append(_invalid_entry(name, message, "READ_ONLY_VALUE"))
            else:
                value, problem = normalise(prop, raw)
                if problem is not None:
                    errors.append(_invalid_entry(name, *problem))
                else:
                    values[name] = value
        return values, errors

    def _validated(self, table: ObjectTable, props: Any) -> dict[str, str | None]:
        values, errors = self._check(table, props)
        if errors:
            raise _invalid(errors)
        return values

    def _checked(self, table: ObjectTable, props: Mapping[str, Any]) -> dict[str, str]:
        """Stored values for a record made or edited outside the API; refuses what HubSpot would."""
        values, errors = self._check(table, props)
        if errors:
            raise ValueError("; ".join(e["message"] for e in errors))
        return {k: v for k, v in values.items() if v is not None}

    def _refuse_backwards(self, table: ObjectTable, record: Record, values: dict[str, str | None]) -> None:
        if self.lifecycle_backwards == "reject" and self._backwards(table, record, values):
            message = (
                f"{values['lifecyclestage']} is an earlier lifecycle stage than "
                f"{record.values['lifecyclestage']}; clear the value first, in a separate request."
            )
            raise _invalid([_invalid_entry("lifecyclestage", message, "INVALID_OPTION")])

    def _backwards(self, table: ObjectTable, record: Record, values: Mapping[str, str | None]) -> bool:
        new, current = values.get("lifecyclestage"), record.values.get("lifecyclestage")
        if new is None or not current or "lifecyclestage" not in table.schema:
            return False
        order = {value: n for n, (value, _) in enumerate(table.schema["lifecyclestage"].options)}
        return order.get(new, 0) < order.get(current, 0)

    def _write(self, table: ObjectTable, record: Record, values: dict[str, str | None]) -> None:
        """An API write HubSpot acknowledges; an earlier lifecycle stage is dropped, as HubSpot does."""
        self._refuse_backwards(table, record, values)
        applied = dict(values)
        if self._backwards(table, record, values):
            del applied["lifecyclestage"]  # answered 200; the later stage stays
        self._apply(table, record, applied)
        self._writes.append((table.name, str(record.id), _stored(values)))

    def _apply(
        self, table: ObjectTable, record: Record, values: Mapping[str, str | None], source: str = "API"
    ) -> None:
        if not values:
            return
        now = self._now_ms()
        self._remember(table, record, values, now, source)
        changed = [(n, v) for n, v in values.items() if record.values.get(n) != v]
        for name, value in values.items():
            if value is None:
                record.values.pop(name, None)
            else:
                record.values[name] = value
        if record.archived_ms is None:
            table.index.move(record, now)
        record.modified_ms = now
        self._indexed(table, record)
        if source != "API" or self._echo_api_writes:
            for name, value in changed:
                self._event(table, "propertyChange", record.id, source, property_name=name, property_value=value)

    def _remember(
        self, table: ObjectTable, record: Record, values: Mapping[str, str | None], at_ms: int, source: str
    ) -> None:
        """Property history, as HubSpot keeps it; a lifecycle stage entered also sets its
        `hs_v2_date_entered_<stage>`, as HubSpot's calculated property does."""
        kept = self._history.setdefault((table.name, record.id), {})
        for name, value in values.items():
            kept.setdefault(name, []).append((value, at_ms, source))
        stage = values.get("lifecyclestage")
        if stage and stage != record.values.get("lifecyclestage") and table.name in ("contacts", "companies"):
            record.values[f"hs_v2_date_entered_{stage}"] = ms_to_iso(at_ms)

    def _archive(self, table: ObjectTable, record: Record, source: str = "CRM_UI") -> None:
        if record.archived_ms is None:
            table.index.remove(record)
            record.archived_ms = self._now_ms()
            self._indexed(table, record)
            self._event(table, "deletion", record.id, source)

    def _event(self, table: ObjectTable, action: str, record_id: int, source: str, **details: Any) -> None:
        """Tells the webhook subscriptions, if any, that a contact or company changed (hubspot_webhooks)."""
        sender = self._webhooks
        if sender is not None and table.name in SINGULAR:
            source_id = _SOURCE_IDS[source]
            sender.notify(SINGULAR[table.name], action, record_id, self._now_ms(), change_source=source,
                          source_id=source_id, **details)  # fmt: skip

    def _take_failure(self, record_id: int) -> _Failure | None:
        failure = self._failures.get(record_id)
        if failure is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[record_id]
        return failure

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _now_ms(self) -> int:
        return dt_to_ms(self.clock())


# --- request parsing -----------------------------------------------------------------------------
def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError as exc:
        raise _ApiError(400, f"Invalid input JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _ApiError(400, "Invalid input JSON: expected an object")
    return body


def _inputs(body: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise _ApiError(400, "Invalid input JSON: inputs must be a list of objects")
    if len(inputs) > limit:
        raise _ApiError(
            400,
            f"The maximum number of inputs supported in a batch request is {limit}. "
            "Please reduce the number of items and try again",
        )
    return inputs


def _list_param(request: Request, name: str) -> list[str] | None:
    if name not in request.query:
        return None
    return [part.strip() for value in request.query[name] for part in value.split(",") if part.strip()]


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.param(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise _ApiError(400, f"{name} must be an integer, not {raw!r}") from exc
    if value < low or (high is not None and value > high):
        raise _ApiError(400, f"{name} must be between {low} and {high}" if high else f"{name} must be >= {low}")
    return value


def _bool_param(request: Request, name: str) -> bool:
    return (request.param(name) or "false").lower() == "true"


def _stored(values: Mapping[str, str | None]) -> dict[str, Any]:
    return {k: "" if v is None else v for k, v in values.items()}


def _ms_of(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, datetime):
        return dt_to_ms(value)
    return to_ms(str(value))
