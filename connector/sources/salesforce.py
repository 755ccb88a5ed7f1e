"""The Salesforce source: the real simple-salesforce client over our own HTTPS session.

Each synced object is read like a Singer stream: one SOQL query over `queryAll` (so deleted and
merged records show), ordered by its replication key (SystemModstamp, Id), paged by the API's
`nextRecordsUrl` at up to 2,000 records a call. Writes go 200 at a time through sObject Collections
with `allOrNone: false`, so one bad record fails alone. Every call passes the API budget gate and the
one RetryPolicy (which logs in again once on an expired session; simple-salesforce is never allowed
to log in by itself).

Every incremental pull reads past its cursor by the exact keyset, plus the last `settle_window`
before `until` again: a long transaction commits with a SystemModstamp older than records already
visible (see `salesforce_soql.Window`). Activity is Tasks and Events (see `salesforce_events`).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from simple_salesforce.api import Salesforce as SimpleSalesforce

from connector.config import ObjectConfig, SalesforceSource, TokenAuth
from connector.errors import ConfigError, Problem
from connector.sources import errors
from connector.sources import salesforce_soql as soql
from connector.sources.base import (
    ApiUsage,
    Cursor,
    EventPage,
    FieldInfo,
    Page,
    PicklistValue,
    RemoteRecord,
    StatusWrite,
    WriteOutcome,
)
from connector.sources.errors import Action, CrmError, SourcePaused
from connector.sources.retry import RetryPolicy, pause
from connector.sources.salesforce_activity import KNOWN_PREFIXES, TaskRule, parse_rules
from connector.sources.salesforce_auth import Grant, configured_token, request_token
from connector.sources.salesforce_events import ActivityReader
from connector.sources.salesforce_http import ApiMeter, CrmSession

T = TypeVar("T")
WRITE_BATCH = 200  # sObject Collections' maximum
# The standard objects that can be merged: the loser keeps MasterRecordId = the winner.
_MERGEABLE = ("lead", "contact", "account")
# Field history: `<Object>History` with `<Object>Id` for standard objects, `<Name>__History` with ParentId.
_HISTORY = {"lead": ("LeadHistory", "LeadId"), "contact": ("ContactHistory", "ContactId"),
            "account": ("AccountHistory", "AccountId"), "opportunity": ("OpportunityFieldHistory", "OpportunityId")}


def _keys(row: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    """Config names -> the names in the answer (Salesforce answers in its own case, whatever we asked)."""
    actual = {key.lower(): key for key in row}
    return {name: actual.get(name.lower(), name) for name in names}


@dataclass(frozen=True)
class ObjectSpec:
    """What the source reads and writes for one synced object."""

    obj: str
    status: str
    owner: str
    extra: tuple[str, ...]
    columns: tuple[str, ...]
    rules: tuple[TaskRule, ...]
    activity: bool

    @classmethod
    def build(cls, source: str, obj: str, settings: ObjectConfig) -> ObjectSpec:
        owner = settings.owner_field or "OwnerId"
        wanted = ["Id", settings.status_field, "SystemModstamp", "CreatedDate", "IsDeleted", owner, *settings.fields]
        if obj.lower() == "lead":
            wanted.append("IsConverted")
        if obj.lower() in _MERGEABLE:
            wanted.append("MasterRecordId")
        activity = settings.activity
        try:
            soql.name(obj)
            return cls(
                obj, soql.name(settings.status_field), soql.name(owner), tuple(soql.columns(settings.fields)),
                tuple(soql.columns(wanted)), parse_rules(activity.types if activity else {}),
                activity is None or activity.enabled,
            )
        except ValueError as exc:
            raise ConfigError([Problem(f"sources.{source}.objects.{obj}", None, str(exc))]) from None

    def query(self, where: str | None, order: str | None = None) -> str:
        return soql.select(self.columns, self.obj, where, order)

    def records(self, rows: Sequence[Mapping[str, Any]]) -> list[RemoteRecord]:
        keys = _keys(rows[0], [self.status, self.owner, *self.extra]) if rows else {}
        status, owner = keys.get(self.status, self.status), keys.get(self.owner, self.owner)
        extra = [(name, keys[name]) for name in self.extra]
        parse = soql.parse_datetime
        records = []
        # Up to 2,000 rows a page, in the fetching thread: one pass, each value read once.
        for row in rows:
            get = row.get
            deleted, created = bool(get("IsDeleted")), get("CreatedDate")
            records.append(
                RemoteRecord(
                    row["Id"],
                    get(status),
                    parse(row["SystemModstamp"]),
                    deleted,
                    bool(get("IsConverted")),
                    get(owner),
                    {name: get(key) for name, key in extra} if extra else {},
                    parse(created) if created else None,
                    get("MasterRecordId") if deleted else None,
                )
            )
        return records

    def update(self, write: StatusWrite) -> dict[str, Any]:
        item: dict[str, Any] = {"attributes": {"type": self.obj}, "id": write.record_id, self.status: write.status}
        if write.owner is not None:
            item[self.owner] = write.owner
        return item


class Salesforce:
    """One Salesforce org, behind the Source protocol."""

    def __init__(
        self,
        name: str,
        settings: SalesforceSource,
        *,
        sleep: Callable[[float], None] = pause,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._specs = {obj: ObjectSpec.build(name, obj, cfg) for obj, cfg in settings.objects.items()}
        self._meter = ApiMeter(settings.api_budget)
        self._http = CrmSession(
            ca_bundle=settings.ca_bundle, timeout=settings.timeout.total_seconds(), meter=self._meter
        )
        attempts = settings.max_retries + 1
        self._retry = RetryPolicy(
            errors.from_salesforce, attempts=attempts, reauthenticate=self._reauthenticate, sleep=sleep, rng=rng
        )
        self._login_retry = RetryPolicy(errors.from_salesforce, attempts=attempts, sleep=sleep, rng=rng)
        self._client: SimpleSalesforce | None = None
        self._lock = threading.Lock()
        self._prefixes = dict(KNOWN_PREFIXES)
        self._fields: dict[str, set[str]] = {}  # activity object -> its field names, from describe

    def __repr__(self) -> str:
        return f"<Salesforce source {self.name!r} ({self.settings.auth.method})>"

    # --- connection ------------------------------------------------------------------------------
    def _grant(self) -> Grant:
        auth = self.settings.auth
        if isinstance(auth, TokenAuth):
            return configured_token(auth, self.settings.instance_url)
        login_url = self.settings.login_url
        if login_url is None:  # the config refuses this; a hand-built settings object may not
            raise CrmError(Action.ADMIN, "no login_url or instance_url to ask for a token")
        return self._login_retry.call(lambda: request_token(self._http, auth, login_url))

    def _connected(self) -> SimpleSalesforce:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> SimpleSalesforce:
        grant = self._grant()
        return SimpleSalesforce(
            instance_url=self.settings.instance_url or grant.instance_url,
            session_id=grant.access_token,
            session=self._http,
            version=self.settings.api_version,
            # None, not `dict`: json's C decoder then builds the dicts itself; any hook has it build a list of
            # pairs per object first, a third more CPU on a 2,000-record page (plain dicts either way).
            object_pairs_hook=None,
        )

    def _reauthenticate(self) -> None:
        if isinstance(self.settings.auth, TokenAuth):
            raise CrmError(
                Action.ADMIN,
                "the access token expired or was revoked: configure a new one (auth method 'token' cannot "
                "log in again)",
                code="INVALID_SESSION_ID",
                status=401,
            )
        client = self._connect()
        with self._lock:
            self._client = client

    def _call(self, request: Callable[[SimpleSalesforce], T]) -> T:
        """One API call: the budget gate, then the retry policy around the transport."""
        self._connected()
        self._meter.check()
        try:
            return self._retry.call(lambda: request(self._connected()))
        except SourcePaused:
            self._meter.paused()
            raise

    def _spec(self, obj: str) -> ObjectSpec:
        spec = self._specs.get(obj)
        if spec is None:
            known = ", ".join(self._specs)
            raise CrmError(Action.ADMIN, f"object {obj!r} is not configured on source {self.name!r} ({known})")
        return spec

    # --- reading ---------------------------------------------------------------------------------
    def _query_headers(self) -> dict[str, str]:
        size = self.settings.page_size
        return {"Sforce-Query-Options": f"batchSize={size}"} if size else {}

    def _first(self, text: str, deleted: bool, headers: dict[str, str]) -> Any:
        return self._call(lambda sf: _answer(sf.query(text, include_deleted=deleted, headers=headers)))

    def _more(self, url: str, headers: dict[str, str]) -> Any:
        return self._call(lambda sf: _answer(sf.query_more(url, identifier_is_url=True, headers=headers)))

    def _pages(self, text: str, *, deleted: bool) -> Iterator[list[dict[str, Any]]]:
        """The answer pages of one query, following nextRecordsUrl; a repeated locator stops with an error."""
        headers = self._query_headers()
        result = self._first(text, deleted, headers)
        seen: set[str] = set()
        while True:
            yield result["records"]
            url = result.get("nextRecordsUrl")
            if result.get("done", True) or not url:
                return
            if url in seen:
                raise CrmError(Action.RETRY, f"Salesforce handed out the locator {url} twice; paging stopped")
            seen.add(url)
            result = self._more(url, headers)

    def pull(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[Page]:
        spec = self._spec(obj)
        window = soql.Window(cursor, until, self.settings.settle_window)
        committed = cursor
        for restart in range(4):
            try:
                for rows in self._pages(spec.query(window.where(), "SystemModstamp, Id"), deleted=True):
                    if rows:
                        records = spec.records(rows)
                        last = Cursor(records[-1].modified_at, records[-1].id)
                        committed = soql.later(committed, last)
                        # The answer is in keyset order, settle re-reads first: a restart resumes
                        # exactly after the last row read, whichever part of the window it was in.
                        window = soql.Window(last, until)
                        yield Page(records, committed)
                return
            except CrmError as exc:
                # An idle query locator expires; the keyset lets us pick up where the last page ended.
                if exc.code != "INVALID_QUERY_LOCATOR" or restart == 3:
                    raise

    def pull_all(self, obj: str) -> Iterator[Page]:
        spec = self._spec(obj)
        for rows in self._pages(spec.query(None, "Id"), deleted=False):
            if rows:
                records = spec.records(rows)
                yield Page(records, Cursor(records[-1].modified_at, records[-1].id))

    def read_statuses(self, obj: str, record_ids: Sequence[str]) -> dict[str, RemoteRecord]:
        spec = self._spec(obj)
        # An Id's first 15 characters are unique too: answer under every form the caller asked with.
        forms: dict[str, list[str]] = {}
        for rid in filter(soql.is_id, record_ids):
            forms.setdefault(rid[:15], []).append(rid)
        found: dict[str, RemoteRecord] = {}
        for chunk in soql.id_chunks(asked[0] for asked in forms.values()):
            for rows in self._pages(spec.query(soql.id_in(chunk)), deleted=True):
                for record in spec.records(rows):
                    for form in forms.get(record.id[:15], [record.id]):
                        found[form] = record
        return found

    # --- writing ---------------------------------------------------------------------------------
    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        spec = self._spec(obj)
        outcomes: list[WriteOutcome] = []
        for start in range(0, len(writes), WRITE_BATCH):
            chunk = writes[start : start + WRITE_BATCH]
            body = {"allOrNone": False, "records": [spec.update(w) for w in chunk]}
            try:
                results = self._patch(body)
            except CrmError as exc:
                if not outcomes:
                    raise
                # Earlier batches landed: report them, and this failure for the rest, one by one.
                outcomes.extend(WriteOutcome(w.record_id, exc) for w in writes[start:])
                break
            outcomes.extend(_outcomes(chunk, results))
        return outcomes

    def _patch(self, body: dict[str, Any]) -> Any:
        return self._call(lambda sf: sf.restful("composite/sobjects", method="PATCH", json=body))

    # --- describing ------------------------------------------------------------------------------
    def _describe(self, obj: str) -> dict[str, Any]:
        described = self._call(lambda sf: sf.restful(f"sobjects/{soql.name(obj)}/describe"))
        if not isinstance(described, dict):
            raise CrmError(Action.RETRY, f"Salesforce answered describe of {obj} with no body")
        prefix = described.get("keyPrefix")
        if isinstance(prefix, str):
            self._prefixes[obj.lower()] = prefix
        return described

    def status_changed_at(self, obj: str, record_ids: Sequence[str]) -> dict[str, datetime]:
        """The newest field-history row of the status field per record; {} when the org keeps none.

        A custom object's `__History` exists only while history is tracked on it; an object the user
        may not see answers the same INVALID_TYPE. Either way there is no date to give.
        """
        spec = self._spec(obj)
        history, parent = _HISTORY.get(spec.obj.lower()) or (spec.obj.removesuffix("__c") + "__History", "ParentId")
        forms: dict[str, list[str]] = {}
        for rid in filter(soql.is_id, record_ids):
            forms.setdefault(rid[:15], []).append(rid)
        found: dict[str, datetime] = {}
        for chunk in soql.id_chunks(asked[0] for asked in forms.values()):
            where = f"Field = {soql.quote(spec.status)} AND {parent} IN ({', '.join(map(soql.quote, chunk))})"
            text = soql.select((parent, "CreatedDate"), history, where, f"{parent}, CreatedDate DESC")
            try:
                rows = [row for page in self._pages(text, deleted=False) for row in page]
            except CrmError as exc:
                if exc.code == "INVALID_TYPE":
                    return {}
                raise
            for row in rows:
                when = soql.parse_datetime(row["CreatedDate"])
                for form in forms.get(str(row[parent])[:15], []):
                    if form not in found or found[form] < when:
                        found[form] = when
        return found

    def describe_field(self, obj: str, field_name: str | None = None) -> FieldInfo:
        spec = self._spec(obj)
        wanted = (field_name or spec.status).lower()
        fields = self._describe(spec.obj).get("fields") or []
        field = next((f for f in fields if str(f.get("name", "")).lower() == wanted), None)
        if field is None:
            return FieldInfo(exists=False, is_picklist=False)
        values = tuple(
            PicklistValue(v["value"], v.get("label") or v["value"], bool(v.get("active", True)), order)
            for order, v in enumerate(field.get("picklistValues") or [])
        )
        if spec.obj.lower() == "lead" and field["name"] == "Status" and wanted == spec.status.lower():
            values = self._lead_statuses(values)
        kind = field.get("type")
        return FieldInfo(True, kind in ("picklist", "multipicklist"), values, kind)

    def _lead_statuses(self, values: tuple[PicklistValue, ...]) -> tuple[PicklistValue, ...]:
        """LeadStatus gives the admin's order and which status converting a lead sets."""
        text = soql.select(("ApiName", "MasterLabel", "SortOrder", "IsConverted"), "LeadStatus", order="SortOrder")
        rows = [row for page in self._pages(text, deleted=False) for row in page]
        by_value = {(r.get("ApiName") or r.get("MasterLabel")): r for r in rows}
        out = []
        for value in values:
            row = by_value.get(value.value)
            if row is not None:
                order = row.get("SortOrder")
                value = PicklistValue(
                    value.value, value.label, value.active, order if isinstance(order, int) else value.order,
                    bool(row.get("IsConverted")),
                )
            out.append(value)
        return tuple(sorted(out, key=lambda v: v.order))

    # --- activity --------------------------------------------------------------------------------
    def _key_prefix(self, obj: str) -> str:
        if obj.lower() not in self._prefixes:
            self._describe(obj)
        return self._prefixes.get(obj.lower(), "")

    def _field_names(self, obj: str) -> set[str]:
        if obj not in self._fields:
            self._fields[obj] = {str(f.get("name", "")).lower() for f in self._describe(obj).get("fields") or []}
        return self._fields[obj]

    def pull_events(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[EventPage]:
        spec = self._spec(obj)
        if not spec.activity:
            return
        reader = ActivityReader(
            spec.obj, self._key_prefix(spec.obj), spec.rules, self.settings.settle_window, self._field_names
        )
        yield from reader.pull(lambda text: self._pages(text, deleted=False), cursor, until)

    # --- the rest of the protocol ----------------------------------------------------------------
    def usage(self) -> ApiUsage:
        return self._meter.usage()

    def check_usage(self, obj: str) -> ApiUsage:
        # GET /limits: one call, and its answer carries Sforce-Limit-Info like any other.
        self._call(lambda sf: sf.limits())
        return self._meter.usage()

    def close(self) -> None:
        self._http.close()


def _outcomes(chunk: Sequence[StatusWrite], results: Any) -> list[WriteOutcome]:
    """One outcome per write, in order: Salesforce answers each record of a collection in request order."""
    if not isinstance(results, list) or len(results) != len(chunk):
        raise CrmError(Action.RETRY, "Salesforce answered a collection update with a different number of results")
    outcomes = []
    for write, result in zip(chunk, results, strict=True):
        if result.get("success"):
            outcomes.append(WriteOutcome(write.record_id))
            continue
        first = (result.get("errors") or [{}])[0]
        code, message = first.get("statusCode"), str(first.get("message") or "rejected without a message")
        error = errors.salesforce_error(code, message, record_id=write.record_id)
        outcomes.append(WriteOutcome(write.record_id, error))
    return outcomes


def _answer(result: Any) -> Any:
    """A query answer must hold `records` and `done`: anything else is a proxy's page, never an empty page."""
    if not isinstance(result, dict) or not isinstance(result.get("records"), list) or "done" not in result:
        shown = json.dumps(result, default=str)
        raise CrmError(Action.RETRY, f"Salesforce answered a query without records: {shown[:200]}")
    return result
