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
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any, Literal, Self

from connector.sandbox._http import LoopbackServer, Request, Response
from connector.sandbox.hubspot_search import (
    Record,
    SearchError,
    SortedIndex,
    dt_to_ms,
    ms_to_iso,
    search,
    to_ms,
)

__all__ = ["HubSpotSandbox", "PropertyDef"]

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


# --- the property model --------------------------------------------------------------------------
@dataclass(frozen=True)
class PropertyDef:
    name: str
    label: str
    type: str = "string"  # string | number | datetime | enumeration
    field_type: str = "text"
    group: str = ""  # set per object type
    options: tuple[tuple[str, str], ...] = ()  # (value, label) in display order
    read_only: bool = False
    hubspot_defined: bool = True
    external_options: bool = False  # owners: options HubSpot fills from elsewhere, any id accepted

    @cached_property
    def option_values(self) -> frozenset[str]:
        return frozenset(value for value, _ in self.options)

    def to_json(self) -> dict[str, Any]:
        stamp = "2019-08-06T02:43:01.940Z"
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": "",
            "groupName": self.group,
            "options": [
                {"label": label, "value": value, "displayOrder": n, "hidden": False, "description": ""}
                for n, (value, label) in enumerate(self.options)
            ],
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.name == "email",
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
        }


def _enum(name: str, label: str, options: Sequence[tuple[str, str]], **kw: Any) -> PropertyDef:
    return PropertyDef(name, label, "enumeration", kw.pop("field_type", "select"), options=tuple(options), **kw)


def _date(name: str, label: str, *, read_only: bool = False) -> PropertyDef:
    return PropertyDef(name, label, "datetime", "date", read_only=read_only)


LEAD_STATUSES = (
    ("NEW", "New"), ("OPEN", "Open"), ("IN_PROGRESS", "In Progress"), ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"), ("ATTEMPTED_TO_CONTACT", "Attempted to Contact"),
    ("CONNECTED", "Connected"), ("BAD_TIMING", "Bad Timing"),
)  # fmt: skip
LIFECYCLE_STAGES = (
    ("subscriber", "Subscriber"), ("lead", "Lead"), ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"), ("opportunity", "Opportunity"), ("customer", "Customer"),
    ("evangelist", "Evangelist"), ("other", "Other"),
)  # fmt: skip
COMPANY_STAGES = (("target", "Target"), ("engaged", "Engaged"), ("customer", "Customer"), ("lost", "Lost"))
_EMAIL_DIRECTIONS = (("EMAIL", "Email"), ("INCOMING_EMAIL", "Incoming email"), ("FORWARDED_EMAIL", "Forwarded"))
_EMAIL_STATUSES = (("BOUNCED", "Bounced"), ("FAILED", "Failed"), ("SCHEDULED", "Scheduled"),
                   ("SENDING", "Sending"), ("SENT", "Sent"))  # fmt: skip
_MEETING_OUTCOMES = (("SCHEDULED", "Scheduled"), ("COMPLETED", "Completed"), ("RESCHEDULED", "Rescheduled"),
                     ("NO_SHOW", "No Show"), ("CANCELED", "Canceled"))  # fmt: skip
_CALL_STATUSES = tuple((v, v.replace("_", " ").capitalize()) for v in (
    "BUSY", "CALLING_CRM_USER", "CANCELED", "COMPLETED", "CONNECTING", "FAILED", "IN_PROGRESS", "NO_ANSWER",
    "QUEUED", "RINGING"))  # fmt: skip


@dataclass
class _Table:
    name: str
    singular: str
    type_id: str
    created_prop: str
    modified_prop: str
    schema: dict[str, PropertyDef]
    defaults: tuple[str, ...]  # returned when a read names no properties
    records: dict[int, Record] = field(default_factory=dict)
    index: SortedIndex = field(default_factory=SortedIndex)
    links: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # to-type -> id -> ids

    def kind(self, name: str) -> str | None:
        prop = self.schema.get(name)
        return prop.type if prop is not None else None

    def links_to(self, to_type: str) -> Mapping[int, list[int]] | None:
        return self.links.get(to_type)

    @property
    def always(self) -> tuple[str, ...]:
        return ("hs_object_id", self.created_prop, self.modified_prop)


_CONTACT_PROPERTIES = (
    PropertyDef("email", "Email"),
    PropertyDef("firstname", "First Name"),
    PropertyDef("lastname", "Last Name"),
    PropertyDef("country", "Country/Region"),
    _enum("hs_lead_status", "Lead Status", LEAD_STATUSES, field_type="radio"),
    _enum("lifecyclestage", "Lifecycle Stage", LIFECYCLE_STAGES, field_type="radio"),
)
_COMPANY_PROPERTIES = (
    PropertyDef("name", "Company name"),
    PropertyDef("domain", "Company Domain Name"),
    PropertyDef("country", "Country/Region"),
    _enum("lifecyclestage", "Lifecycle Stage", LIFECYCLE_STAGES, field_type="radio"),
    _enum("company_stage", "Company stage", COMPANY_STAGES, hubspot_defined=False),  # a custom property
)
_EMAIL_PROPERTIES = (
    _date("hs_timestamp", "Activity date"),
    _enum("hs_email_direction", "Email direction", _EMAIL_DIRECTIONS),
    _enum("hs_email_status", "Email send status", _EMAIL_STATUSES),
    PropertyDef("hs_email_subject", "Email subject"),
)
_MEETING_PROPERTIES = (
    _date("hs_timestamp", "Activity date"),
    _enum("hs_meeting_outcome", "Meeting outcome", _MEETING_OUTCOMES),
    PropertyDef("hs_meeting_title", "Meeting name"),
)
_CALL_PROPERTIES = (
    _date("hs_timestamp", "Activity date"),
    _enum("hs_call_status", "Call status", _CALL_STATUSES),
    PropertyDef("hs_call_title", "Call title"),
)


def _table(name: str, type_id: str, dates: tuple[str, str], props: Iterable[PropertyDef], group: str) -> _Table:
    created, modified = dates
    fixed = (
        PropertyDef("hs_object_id", "Record ID", "number", "number", read_only=True),
        _date(created, "Create Date", read_only=True),
        _date(modified, "Last Modified Date", read_only=True),
        _enum("hubspot_owner_id", "Owner", (), external_options=True),
    )
    schema = {p.name: replace(p, group=group) for p in (*props, *fixed)}
    singular = "company" if name == "companies" else name.removesuffix("s")
    defaults = {"contacts": ("email", "firstname", "lastname"), "companies": ("name", "domain")}.get(name, ())
    return _Table(name, singular, type_id, created, modified, schema, defaults)


def _build_tables() -> dict[str, _Table]:
    engagement_dates = ("hs_createdate", "hs_lastmodifieddate")
    tables = (
        _table("contacts", "0-1", ("createdate", "lastmodifieddate"), _CONTACT_PROPERTIES, "contactinformation"),
        _table("companies", "0-2", ("createdate", "hs_lastmodifieddate"), _COMPANY_PROPERTIES, "companyinformation"),
        _table("emails", "0-49", engagement_dates, _EMAIL_PROPERTIES, "email"),
        _table("meetings", "0-47", engagement_dates, _MEETING_PROPERTIES, "meeting"),
        _table("calls", "0-48", engagement_dates, _CALL_PROPERTIES, "call"),
    )
    by_name = {t.name: t for t in tables}
    for kind in ENGAGEMENTS:
        by_name[kind].links["contacts"] = {}
        by_name["contacts"].links[kind] = {}
    return by_name


ENGAGEMENTS = ("emails", "meetings", "calls")
# (from, to) -> HubSpot-defined association type id and v3 label
ASSOCIATION_TYPES = {
    ("emails", "contacts"): (198, "email_to_contact"), ("contacts", "emails"): (197, "contact_to_email"),
    ("meetings", "contacts"): (200, "meeting_event_to_contact"),
    ("contacts", "meetings"): (199, "contact_to_meeting_event"),
    ("calls", "contacts"): (194, "call_to_contact"), ("contacts", "calls"): (193, "contact_to_call"),
}  # fmt: skip
_ALIASES = {
    alias: name
    for name, aliases in {
        "contacts": ("contact", "0-1"), "companies": ("company", "0-2"), "emails": ("email", "0-49"),
        "meetings": ("meeting", "0-47"), "calls": ("call", "0-48"),
    }.items()
    for alias in (name, *aliases)
}  # fmt: skip


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


def _normalise(prop: PropertyDef, raw: Any) -> tuple[str | None, tuple[str, str] | None]:
    """HubSpot's stored form of a written value, or (message, error code) when it refuses it."""
    if raw is None or raw == "":
        return None, None  # clears the property
    text = raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    if prop.type == "string":
        return text, None
    if prop.type == "enumeration":
        if text != text.strip():
            return None, (f'"{text}" includes leading or trailing whitespace.', "LEADING_TRAILING_WHITESPACE")
        if prop.external_options or text in prop.option_values:
            return text, None
        allowed = ", ".join(label for _, label in prop.options)
        return None, (f"{text} was not one of the allowed options: [{allowed}]", "INVALID_OPTION")
    try:
        if prop.type == "datetime":
            return ms_to_iso(to_ms(text)), None
        float(text)
        return text, None
    except ValueError:
        return None, (f"{text} was not a valid {'long' if prop.type == 'datetime' else 'number'}.", "INVALID_LONG")


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
        self.clock: Callable[[], datetime] = _utcnow
        # Seconds for the rate-limit windows; a test may replace it to step time instead of sleeping.
        self.timer: Callable[[], float] = time.monotonic
        self.rate_limited_count = 0
        self.server = LoopbackServer(self._handle, latency=latency)
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._tables = _build_tables()
        self._next_id = _FIRST_ID
        self._writes: list[tuple[str, str, dict[str, Any]]] = []
        self._failures: dict[int, _Failure] = {}
        self._window: deque[float] = deque()
        self._search_window: deque[float] = deque()
        self._accepted: list[float] = []
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
            self._tables = _build_tables()
            self._next_id = _FIRST_ID
            self._writes.clear()
            self._failures.clear()
            self._window.clear()
            self._search_window.clear()
            self._accepted.clear()
            self._day, self._day_count = None, 0
            self.rate_limited_count = 0
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
            links: list[tuple[int, int]] = []
            for raw in records:
                values = dict(raw)
                created = _ms_of(values.pop(table.created_prop, None), now)
                modified = _ms_of(values.pop(table.modified_prop, None), now)
                contacts = values.pop("associations.contact", None)
                if contacts is not None and table.name not in ENGAGEMENTS:
                    raise ValueError("only engagements take associations.contact")
                ready = all(
                    isinstance(v, str) and v and (k in plain and (not plain[k] or v in plain[k]))
                    for k, v in values.items()
                )
                record = Record(self._take_id(), values if ready else self._checked(table, values), created, modified)
                made.append(record)
                for contact in contacts if isinstance(contacts, list) else [] if contacts is None else [contacts]:
                    if int(contact) not in self._tables["contacts"].records:
                        raise KeyError(f"no contact {contact}")
                    links.append((record.id, int(contact)))
            table.records.update((r.id, r) for r in made)
            table.index.add_many(made)
            for record_id, contact_id in links:
                self._link(table.name, record_id, contact_id)
        return [str(r.id) for r in made]

    def edit_as_person(self, object_type: str, record_id: str, **properties: Any) -> None:
        """A user's edit in HubSpot's UI: options are checked, lifecyclestage may move backwards."""
        table = self._table(object_type, api=False)
        with self._lock:
            record = table.records[int(record_id)]
            self._apply(table, record, self._checked(table, properties))

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
        self, kind: str, contact_id: str, properties: dict[str, Any], *, at: datetime | None = None
    ) -> str:
        """Logs an email, meeting or call on a contact. `at` is its hs_timestamp (default: clock());
        it is created, and so modified, at clock(), which is when an incremental pull sees it."""
        if kind not in ENGAGEMENTS:
            raise ValueError(f"kind must be one of {ENGAGEMENTS}, not {kind!r}")
        table = self._tables[kind]
        with self._lock:
            if int(contact_id) not in self._tables["contacts"].records:
                raise KeyError(f"no contact {contact_id}")
            now = self._now_ms()
            values = {"hs_timestamp": ms_to_iso(dt_to_ms(at) if at is not None else now), **properties}
            record = Record(self._take_id(), self._checked(table, values), now, now)
            table.records[record.id] = record
            table.index.add(record)
            self._link(kind, record.id, int(contact_id))
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
            record = self._find(table, raw_id, request.param("idProperty"), _bool_param(request, "archived"))
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
            for target, to_id in links:
                if table.name in ENGAGEMENTS:
                    self._link(table.name, record.id, to_id)
                else:
                    self._link(target, to_id, record.id)
            self._writes.append((table.name, str(record.id), _stored(values)))
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
                self._archive(table, record)
        return Response(204, records=0 if record is None else 1)

    def _search(self, request: Request, type_name: str) -> Response:
        table = self._table(type_name)
        body = _json_object(request)
        props = body.get("properties") or None
        with self._lock:
            try:
                page = search(table, body)
            except SearchError as exc:
                raise _ApiError(400, exc.message, exc.category) from exc
            results = [self._object(table, table.records[i], props) for i in page.ids]
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
                record = self._find(table, raw_id, body.get("idProperty"), _bool_param(request, "archived"))
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
        self, table: _Table, writes: list[tuple[str, dict[str, str | None]]], id_property: str | None
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

    def _not_found(self, table: _Table, ids: list[str]) -> dict[str, Any]:
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

    def _link_items(self, source: _Table, target: _Table, to_ids: list[int], v4: bool) -> list[dict[str, Any]]:
        type_id, label = ASSOCIATION_TYPES[(source.name, target.name)]
        if not v4:
            return [{"id": str(i), "type": label} for i in to_ids]
        kinds = [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]
        return [{"toObjectId": i, "associationTypes": kinds} for i in to_ids]

    def _link(self, engagement: str, engagement_id: int, contact_id: int) -> None:
        self._tables[engagement].links["contacts"].setdefault(engagement_id, []).append(contact_id)
        self._tables["contacts"].links[engagement].setdefault(contact_id, []).append(engagement_id)

    def _links_of(self, table: _Table, specs: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
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
    def _table(self, name: str, *, api: bool = True) -> _Table:
        canonical = _ALIASES.get(name.lower())
        if canonical is None:
            if not api:
                raise KeyError(f"unknown object type {name!r}")
            raise _ApiError(400, f"Unable to infer object type from: {name}")
        return self._tables[canonical]

    def _find(self, table: _Table, raw_id: str, id_property: str | None, archived: bool) -> Record | None:
        if id_property in (None, "", "hs_object_id"):
            record = table.records.get(int(raw_id)) if raw_id.isdigit() else None
        elif table.schema.get(id_property) is not None and id_property == "email":
            record = next((r for r in table.records.values() if r.values.get("email") == raw_id), None)
        else:
            raise _ApiError(400, f"Unable to perform update/upsert by non-unique {table.type_id} property")
        if record is None or (record.archived_ms is not None) != archived:
            return None
        return record

    def _object(
        self,
        table: _Table,
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
            out["propertiesWithHistory"] = {
                n: [{"value": v, "timestamp": out["updatedAt"], "sourceType": "API"}]
                for n in history
                if n in table.schema and (v := self._value(table, record, n)) is not None
            }
        associations = {}
        for to_name in links or []:
            target = _ALIASES.get(to_name.lower())
            to_ids = table.links.get(target or "", {}).get(record.id)
            if target is not None and to_ids:
                associations[target] = {"results": self._link_items(table, self._tables[target], to_ids, False)}
        if associations:
            out["associations"] = associations
        return out

    def _value(self, table: _Table, record: Record, name: str) -> str | None:
        if name == "hs_object_id":
            return str(record.id)
        if name == table.created_prop:
            return ms_to_iso(record.created_ms)
        if name == table.modified_prop:
            return ms_to_iso(record.modified_ms)
        return record.values.get(name)

    def _check(self, table: _Table, props: Any) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
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
                value, problem = _normalise(prop, raw)
                if problem is not None:
                    errors.append(_invalid_entry(name, *problem))
                else:
                    values[name] = value
        return values, errors

    def _validated(self, table: _Table, props: Any) -> dict[str, str | None]:
        values, errors = self._check(table, props)
        if errors:
            raise _invalid(errors)
        return values

    def _checked(self, table: _Table, props: Mapping[str, Any]) -> dict[str, str]:
        """Stored values for a record made or edited outside the API; refuses what HubSpot would."""
        values, errors = self._check(table, props)
        if errors:
            raise ValueError("; ".join(e["message"] for e in errors))
        return {k: v for k, v in values.items() if v is not None}

    def _refuse_backwards(self, table: _Table, record: Record, values: dict[str, str | None]) -> None:
        if self.lifecycle_backwards == "reject" and self._backwards(table, record, values):
            message = (
                f"{values['lifecyclestage']} is an earlier lifecycle stage than "
                f"{record.values['lifecyclestage']}; clear the value first, in a separate request."
            )
            raise _invalid([_invalid_entry("lifecyclestage", message, "INVALID_OPTION")])

    def _backwards(self, table: _Table, record: Record, values: Mapping[str, str | None]) -> bool:
        new, current = values.get("lifecyclestage"), record.values.get("lifecyclestage")
        if new is None or not current or "lifecyclestage" not in table.schema:
            return False
        order = {value: n for n, (value, _) in enumerate(table.schema["lifecyclestage"].options)}
        return order.get(new, 0) < order.get(current, 0)

    def _write(self, table: _Table, record: Record, values: dict[str, str | None]) -> None:
        """An API write HubSpot acknowledges; an earlier lifecycle stage is dropped, as HubSpot does."""
        self._refuse_backwards(table, record, values)
        applied = dict(values)
        if self._backwards(table, record, values):
            del applied["lifecyclestage"]  # answered 200; the later stage stays
        self._apply(table, record, applied)
        self._writes.append((table.name, str(record.id), _stored(values)))

    def _apply(self, table: _Table, record: Record, values: Mapping[str, str | None]) -> None:
        if not values:
            return
        for name, value in values.items():
            if value is None:
                record.values.pop(name, None)
            else:
                record.values[name] = value
        now = self._now_ms()
        if record.archived_ms is None:
            table.index.move(record, now)
        record.modified_ms = now

    def _archive(self, table: _Table, record: Record) -> None:
        if record.archived_ms is None:
            table.index.remove(record)
            record.archived_ms = self._now_ms()

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
