"""HubSpot, through hubspot-api-client over HTTP: incremental search pulls, batch reads and writes.

Each synced object is a `Stream` (`hubspot_stream`): object type, key, replication key
(`lastmodifieddate` for contacts, `hs_lastmodifieddate` for the rest), properties. Answers are read
as JSON (the client's raw-response mode) rather than as its model objects, which cost tens of
milliseconds a page.

* Pulls search by modified date with the record id as tie-breaker, 200 a page; `hubspot_window`
  holds the cursor logic (HubSpot's one sort, its unstable order of ties and its 10,000-result
  cap). Every pull also re-reads the settle window (`until - settle`) and a lookback before its
  cursor, because HubSpot's search shows a change late, sometimes after newer ones; the engine
  de-duplicates. A millisecond behind the cursor with more records than a page (a bulk import) is
  re-read one page deep only, so it is not read whole on every pull. Whether the portal compares
  ids as text in filters is asked once, when a tie first needs it.
* An object's first pull (no cursor yet) reads the list API instead, 100 a call at the general rate
  limit and without search's 10,000 cap; `hubspot_listing` holds its cursor logic (held before the
  listing, so that the first search re-reads what changed meanwhile; resumable at HubSpot's token).
* Search does not return archived records: `pull_all` (reconcile, resync --full) lists live and
  archived ones, 100 a page, the archived with `deleted=True`; an incremental pull reads the archived
  list at most every ARCHIVES_EVERY. A contact carrying `hs_merged_object_ids` brings each merged-away
  id as deleted, `merged_into` it. Every record carries `created_at` (`createdAt`).
* A 200 that is not the JSON asked for is retried as a 503, then reported with what came.
* Writes (`hubspot_writes`) are batch updates of 100, each input's outcome on its own. There, too,
  HubSpot's lifecycle rule: `lifecyclestage` only moves forward through the API, so with
  `clear_before_backwards` (the default) a write that moves it backwards in HubSpot's own option
  order (the property's displayOrder, read once) first sets it to "" for those records in one batch
  update, then writes the value in the next. Other properties are written as they are.
* Activity: emails, meetings and calls modified after the events cursor (and in the settle window),
  each with the contacts or companies it is associated with (one v4 batch association read a page
  of engagements); `hubspot_activity` says which engagement is which event, and how
  `activity.types` overrides that. An event's key is `<kind>:<engagement id>:<object>:<record id>`:
  an email to two contacts is two events, and the event inbox is unique per source.
* Pacing (`hubspot_pacing`): every call waits until it fits HubSpot's stated limits, and none is
  made once `api_budget` of the daily allocation is spent (`SourcePaused`). Retries are the
  source's RetryPolicy around each call; urllib3's own are off, so nothing is sent twice by two layers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import hubspot
from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest
from hubspot.crm.objects import (
    BatchInputSimplePublicObjectBatchInput,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
)

from connector.config import HubSpotSource
from connector.sources import errors
from connector.sources import hubspot_listing as listings
from connector.sources.base import (
    ApiUsage,
    Cursor,
    EventPage,
    FieldInfo,
    Page,
    PicklistValue,
    RemoteEvent,
    RemoteRecord,
    StatusWrite,
    WriteOutcome,
)
from connector.sources.errors import Action, CrmError
from connector.sources.hubspot_listing import Listing
from connector.sources.hubspot_pacing import Pacer, Transport
from connector.sources.hubspot_stream import LIFECYCLE, Json, Stream, at_ms, millis, ms_of, to_ms
from connector.sources.hubspot_window import Mark, Search, SearchWindow, WindowStalled, first_search
from connector.sources.hubspot_writes import Writer
from connector.sources.retry import RetryPolicy, pause

log = logging.getLogger(__name__)
SEARCH_PAGE = 200
LIST_PAGE = 100
BATCH = 100
MERGED = "hs_merged_object_ids"  # a contact's merged-away ids, ";"-separated
HISTORY_BATCH = 50  # HubSpot's cap on a batch read with propertiesWithHistory
ARCHIVES_EVERY = 600.0  # seconds between two reads of the archived list of an object
SEARCHES_PER_SECOND = 5.0  # HubSpot's documented search limit per token; its answers do not state it


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class HubSpot:
    """The Source for one HubSpot portal (a private app's token)."""

    def __init__(
        self,
        name: str,
        settings: HubSpotSource,
        *,
        retry_sleep: Callable[[float], None] = pause,
        pace_sleep: Callable[[float], None] = pause,
        clock: Callable[[], float] = time.monotonic,
        searches_per_second: float = SEARCHES_PER_SECOND,
        list_first: bool = True,
    ) -> None:
        self.name = name
        self.list_first = list_first  # an object's first pull reads the list API (`hubspot_listing`)
        self.settings = settings
        self.streams = {obj: Stream.of(name, obj, cfg) for obj, cfg in settings.objects.items()}
        self.pacer = Pacer(
            budget=settings.api_budget, search_per_second=searches_per_second, clock=clock, sleep=pace_sleep
        )
        ca_bundle = str(settings.ca_bundle) if settings.ca_bundle else None
        self._transport = Transport(self.pacer, timeout=settings.timeout.total_seconds(), ca_certs=ca_bundle)
        self._api_clients: list[Any] = []
        self._retry = RetryPolicy(errors.from_hubspot, attempts=settings.max_retries + 1, sleep=retry_sleep)
        self._lookback_ms = millis(settings.lookback)
        self._settle_ms = millis(settings.settle_window)
        self._option_orders: dict[str, dict[str, int]] = {}
        self._writer = Writer(self._update, self._option_order)
        self._probed = False
        self._ids_as_text: dict[str, bool] = {}
        self._clock = clock
        self._archives_looked: dict[str, tuple[float, int]] = {}  # object -> (clock, until ms) of the last look
        hub = hubspot.HubSpot(api_factory=self._api)
        self._search = hub.crm.objects.search_api
        self._objects = hub.crm.objects.basic_api
        self._batch = hub.crm.objects.batch_api
        self._properties = hub.crm.properties.core_api
        self._associations = hub.crm.associations.v4.batch_api

    def _api(self, package: Any, api_name: str, _config: Mapping[str, Any]) -> Any:
        """Every API object of the client: our host, token and CA bundle, and the one shared, paced pool."""
        configuration = package.Configuration()
        configuration.host = self.settings.base_url.rstrip("/")
        configuration.access_token = self.settings.auth.access_token.get_secret_value()
        client = package.ApiClient(configuration=configuration)
        client.rest_client.pool_manager.clear()
        client.rest_client.pool_manager = self._transport
        client.user_agent = "connector (hubspot-api-client)"
        self._api_clients.append(client)
        return getattr(package, api_name)(api_client=client)

    def _stream(self, obj: str) -> Stream:
        stream = self.streams.get(obj)
        if stream is None:
            raise CrmError(Action.ADMIN, f"{obj} is not an object of source {self.name}")
        return stream

    def _json(self, call: Callable[[], Any], expect: str | None = "results") -> Json:
        """One API call, retried by the policy, its answer as JSON (the client's raw-response mode).

        A 200 that is not the JSON object asked for (an HTML page from a proxy, a body cut short, an
        object without its `expect` list) is retried as a 503 is, then reported with what HubSpot
        sent: taken as it is, it would crash the pull or pass for an empty page.
        """
        return self._retry.call(lambda: _answer(call(), expect))

    # --- records ---------------------------------------------------------------------------------
    def _record(self, stream: Stream, item: Json, *, deleted: bool = False) -> RemoteRecord:
        props: Mapping[str, Any] = item.get("properties") or {}
        # An archived record's date is its archiving: later than anything read of it before.
        modified = (item.get("archivedAt") if deleted else None) or props.get(stream.replication_key)
        modified = modified or item.get("archivedAt") or item.get("updatedAt")
        created = item.get("createdAt")
        return RemoteRecord(
            id=str(item["id"]),
            status=props.get(stream.status_field) or None,
            modified_at=at_ms(to_ms(str(modified))),
            deleted=deleted or bool(item.get("archived")),
            owner=props.get(stream.owner_field) or None,
            fields={f: props.get(f) for f in stream.fields},
            created_at=at_ms(to_ms(str(created))) if created else None,
        )

    def _records(self, stream: Stream, items: list[Json]) -> list[RemoteRecord]:
        """The records of an answer, and for each survivor of a merge its merged-away ids, deleted and
        pointing at it: HubSpot lists them in the survivor's `hs_merged_object_ids` and never shows
        them again (a read of such an id answers the survivor)."""
        records = []
        for item in items:
            record = self._record(stream, item)
            records.append(record)
            merged = str((item.get("properties") or {}).get(MERGED) or "")
            for old in (part.strip() for part in merged.split(";")):
                if old.isdigit() and old != record.id:
                    records.append(
                        RemoteRecord(old, None, record.modified_at, deleted=True, merged_into=record.id)
                    )
        return records

    def _learn_limits(self, stream: Stream) -> None:
        """Search answers state no limits: one small call that does, first, lets the daily budget hold
        from the first pull (a list call needs no scope the pull does not need)."""
        # Once, and again after a pause dropped the reading; not on every pull when HubSpot states no
        # daily limit at all (an OAuth app's answers do not).
        stale = self.pacer.daily_limit is not None and self.pacer.daily_used is None
        if not self._probed or stale:
            self._probed = True
            self._json(partial(self._objects.get_page, stream.name, limit=1, properties=[], _preload_content=False))

    def pull(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[Page]:
        stream = self._stream(obj)
        self._learn_limits(stream)
        last = cursor
        properties = self._properties_of(stream)
        listing = listings.resumed(cursor)
        if listing is None and cursor.modified_at is None and self.list_first:
            listing = listings.begin(self._newest(stream), self._settle_ms)
        if listing is not None:
            yield from self._first_listing(stream, properties, listing)
            return
        for rows, mark in self._windowed(stream.name, stream.replication_key, properties, cursor, until):
            last = _cursor(mark)
            yield Page(self._records(stream, rows), last)
        yield from self._archived_since(stream, cursor, last, until)

    def _first_listing(self, stream: Stream, properties: list[str], listing: Listing) -> Iterator[Page]:
        """The first pull, read with the list API from `listing.after` on (`hubspot_listing` says why
        and what cursor each page commits)."""
        held: list[Json] = []
        for items, after in self._list_pages(stream, False, properties, listing.after):
            held.extend(items)
            # Two list answers make one page, as big as a search's: half the transactions, and the
            # engine's cost per page is most of its cost per record at 100.
            if len(held) >= SEARCH_PAGE or after is None:
                yield Page(self._records(stream, held), listings.page_cursor(listing, after))
                held = []

    def _newest(self, stream: Stream) -> int | None:
        """The newest modified stamp HubSpot's search shows now (None: no record): every change made
        from here on is stamped at or after it, in HubSpot's own clock, whatever ours says."""
        body = PublicObjectSearchRequest(
            sorts=[{"propertyName": stream.replication_key, "direction": "DESCENDING"}],
            properties=[stream.replication_key],
            limit=1,
        )
        answer = self._json(partial(self._search.do_search, stream.name, body, _preload_content=False))
        found = answer["results"]
        if not found:
            return None
        props = found[0].get("properties") or {}
        return to_ms(str(props.get(stream.replication_key) or found[0].get("updatedAt")))

    def _properties_of(self, stream: Stream) -> list[str]:
        return [*stream.properties, MERGED] if stream.name == "contacts" else stream.properties

    def _archived_since(self, stream: Stream, start: Cursor, cursor: Cursor, until: datetime) -> Iterator[Page]:
        """Records archived since the last look, deleted. Search never shows an archived record, and
        HubSpot's only reader of them is the archived list (`archived=true`, in id order, with
        `archivedAt`): it is read whole, so at most every ARCHIVES_EVERY, and what was archived since
        the previous look (less the settle window) is handed on, with the cursor the pull reached."""
        if start.modified_at is None:
            return  # a first pull reads live records only: nothing archived is in the store yet
        now = self._clock()
        looked = self._archives_looked.get(stream.name)
        if looked is not None and now - looked[0] < ARCHIVES_EVERY:
            return
        since = (looked[1] if looked is not None else ms_of(start.modified_at)) - self._settle_ms - self._lookback_ms
        for items in self._listed(stream, archived=True):
            gone = [self._record(stream, item, deleted=True) for item in items]
            gone = [r for r in gone if ms_of(r.modified_at) >= since]
            if gone:
                yield Page(gone, cursor)
        self._archives_looked[stream.name] = (now, ms_of(until))


    def pull_all(self, obj: str) -> Iterator[Page]:
        stream = self._stream(obj)
        for archived in (False, True):
            for items in self._listed(stream, archived):
                yield Page([self._record(stream, item, deleted=archived) for item in items], Cursor())

    def _listed(self, stream: Stream, archived: bool) -> Iterator[list[Json]]:
        for items, _ in self._list_pages(stream, archived, stream.properties):
            if items:
                yield items

    def _list_pages(
        self, stream: Stream, archived: bool, properties: list[str], after: str | None = None
    ) -> Iterator[tuple[list[Json], str | None]]:
        """Each page of the list from `after` on, with the paging token of the page after it (None: last).

        A token kept from an earlier run that HubSpot refuses (a 400) lists from the start again: the
        records are read twice (the engine de-duplicates), never skipped, and the listing never stalls.
        """
        seen: set[str] = set()
        kept = after is not None
        while True:
            call = partial(self._objects.get_page, stream.name, limit=LIST_PAGE, after=after, properties=properties,
                           archived=archived, _preload_content=False)
            try:
                answer = self._json(call)
            except CrmError as exc:
                if not (kept and exc.status == 400):
                    raise
                log.warning("%s %s: HubSpot refused the paging token kept from the last run (%s); listing "
                            "from the start again", self.name, stream.name, exc.describe())
                after, kept = None, False
                continue
            kept = False
            following = ((answer.get("paging") or {}).get("next") or {}).get("after")
            after = str(following) if following else None
            if after is not None and after in seen:
                raise WindowStalled(f"HubSpot gave the paging token {after[:40]!a} twice while listing "
                                    f"{stream.name}")
            yield answer.get("results") or [], after
            if after is None:
                return
            seen.add(after)

    def _windowed(
        self, object_type: str, modified: str, properties: list[str], cursor: Cursor, until: datetime
    ) -> Iterator[tuple[list[Json], Mark]]:
        """The complete rows of each search page from `cursor` to `until`, with the cursor after them."""
        floor = _mark(cursor)

        def mark(item: Json) -> Mark:
            props = item.get("properties") or {}
            return Mark(to_ms(str(props.get(modified) or item.get("updatedAt"))), int(item["id"]))

        by_offset = partial(self._reads_ids_as_text, object_type)
        first = first_search(floor, ms_of(until), self._lookback_ms, self._settle_ms, by_offset)
        window = SearchWindow(first, mark, limit=SEARCH_PAGE, floor=floor, by_offset=by_offset)
        while window.next is not None:
            body = _search_body(window.next, modified, [*properties, modified])
            answer = self._json(partial(self._search.do_search, object_type, body, _preload_content=False))
            more = bool((answer.get("paging") or {}).get("next"))
            rows = window.take(answer.get("results") or [], more)
            if rows and window.cursor is not None:
                yield rows, window.cursor

    def _reads_ids_as_text(self, object_type: str) -> bool:
        """Whether this portal's search compares hs_object_id as text; asked once, when a tie needs it.
        HubSpot's ids are far above 9: `hs_object_id <= 9` finds one only when "1001" <= "9" holds."""
        known = self._ids_as_text.get(object_type)
        if known is None:
            body = PublicObjectSearchRequest(
                filter_groups=[{"filters": [{"propertyName": "hs_object_id", "operator": "LTE", "value": "9"}]}],
                properties=["hs_object_id"],
                limit=1,
            )
            answer = self._json(partial(self._search.do_search, object_type, body, _preload_content=False))
            found = answer["results"]
            known = any(str(item.get("id", "")).isdigit() and int(item["id"]) > 9 for item in found)
            self._ids_as_text[object_type] = known
        return known

    def read_statuses(self, obj: str, record_ids: Sequence[str]) -> dict[str, RemoteRecord]:
        stream = self._stream(obj)
        found: dict[str, RemoteRecord] = {}
        properties = self._properties_of(stream)
        for chunk in _chunks(list(dict.fromkeys(record_ids)), BATCH):
            body = BatchReadInputSimplePublicObjectId(
                inputs=[{"id": i} for i in chunk], properties=properties, properties_with_history=[]
            )
            answer = self._json(partial(self._batch.read, stream.name, body, archived=False, _preload_content=False))
            asked = set(chunk)
            # A merged-away id is answered with its survivor: it comes back deleted, merged into it.
            found.update((r.id, r) for r in self._records(stream, answer["results"]) if r.id in asked)
        return found

    def status_changed_at(self, obj: str, record_ids: Sequence[str]) -> dict[str, datetime]:
        """The status property's own date: the newest entry of its history (batch read with
        `propertiesWithHistory`, 50 records a call, HubSpot's cap), and for lifecyclestage
        `hs_v2_date_entered_<stage>` where the portal has it."""
        stream = self._stream(obj)
        entered = stream.status_field == LIFECYCLE
        changed: dict[str, datetime] = {}
        for chunk in _chunks(list(dict.fromkeys(record_ids)), HISTORY_BATCH):
            properties = [stream.status_field]
            if entered:
                properties += [f"hs_v2_date_entered_{stage}" for stage in self._option_order(stream)]
            body = BatchReadInputSimplePublicObjectId(
                inputs=[{"id": i} for i in chunk],
                properties=properties,
                properties_with_history=[stream.status_field],
            )
            answer = self._json(partial(self._batch.read, stream.name, body, archived=False, _preload_content=False))
            for item in answer["results"]:
                at = _changed_at(item, stream.status_field, entered)
                if at is not None and str(item.get("id")) in chunk:
                    changed[str(item["id"])] = at
        return changed

    # --- writes ----------------------------------------------------------------------------------
    def write_statuses(self, obj: str, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        return self._writer.write(self._stream(obj), writes)

    def _update(self, object_type: str, inputs: list[Json]) -> Json:
        body = BatchInputSimplePublicObjectBatchInput(inputs=inputs)
        return self._json(partial(self._batch.update, object_type, body, _preload_content=False))

    def _option_order(self, stream: Stream) -> dict[str, int]:
        order = self._option_orders.get(stream.name)
        if order is None:
            order = {v.value: v.order for v in self.describe_field(stream.name).values}
            self._option_orders[stream.name] = order
        return order

    # --- activity --------------------------------------------------------------------------------
    def pull_events(self, obj: str, cursor: Cursor, *, until: datetime) -> Iterator[EventPage]:
        """Each engagement kind is read from the same cursor to `until`; the cursor moves only once
        every kind is read, so the pages in between carry the cursor they started from."""
        stream = self._stream(obj)
        self._learn_limits(stream)
        best = _mark(cursor)
        for kind in stream.events.kinds:
            properties = [*stream.events.properties(kind), "hs_timestamp"]
            for rows, mark in self._windowed(kind, "hs_lastmodifieddate", properties, cursor, until):
                best = mark if best is None or mark > best else best
                yield EventPage(self._events(stream, kind, rows), cursor)
        if best is not None and best != _mark(cursor):
            yield EventPage([], _cursor(best))

    def _events(self, stream: Stream, kind: str, rows: list[Json]) -> list[RemoteEvent]:
        typed = [(row, stream.events.event(kind, row.get("properties") or {})) for row in rows]
        typed = [(row, event) for row, event in typed if event is not None]
        if not typed:
            return []
        links = self._associated(kind, stream.name, [str(row["id"]) for row, _ in typed])
        events = []
        for row, event in typed:
            assert event is not None
            props = row.get("properties") or {}
            at = at_ms(to_ms(str(props.get("hs_timestamp") or row.get("createdAt"))))
            for record_id in links.get(str(row["id"]), ()):
                key = f"{kind}:{row['id']}:{stream.name}:{record_id}"
                events.append(RemoteEvent(record_id, event, at, key))
        return events

    def _associated(self, from_type: str, to_type: str, ids: list[str]) -> dict[str, list[str]]:
        body = BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": i} for i in ids])
        answer = self._json(partial(self._associations.get_page, from_type, to_type, body, _preload_content=False))
        links: dict[str, list[str]] = {}
        for result in answer.get("results") or []:
            links[str(result["from"]["id"])] = [str(to["toObjectId"]) for to in result.get("to") or []]
        return links  # engagements with no such record come back in `errors`: they have no event here

    # --- the rest of the protocol ----------------------------------------------------------------
    def describe_field(self, obj: str, field: str | None = None) -> FieldInfo:
        stream = self._stream(obj)
        name = field or stream.status_field
        try:
            answer = self._json(
                partial(self._properties.get_by_name, stream.name, name, _preload_content=False),
                expect=None,
            )
        except CrmError as exc:
            if exc.status == 404:
                return FieldInfo(exists=False, is_picklist=False)
            raise
        values = tuple(
            PicklistValue(
                value=str(option["value"]),
                label=str(option.get("label") or option["value"]),
                active=not option.get("hidden", False),
                order=n if (order := option.get("displayOrder", -1)) is None or order < 0 else int(order),
            )
            for n, option in enumerate(answer.get("options") or [])
        )
        kind = answer.get("type")
        return FieldInfo(exists=True, is_picklist=kind == "enumeration", values=values, type=kind)

    def usage(self) -> ApiUsage:
        return self.pacer.usage()

    def check_usage(self, obj: str) -> ApiUsage:
        # A one-record list: its answer carries the X-HubSpot-RateLimit-Daily headers.
        stream = self._stream(obj)
        self._json(partial(self._objects.get_page, stream.name, limit=1, properties=[], _preload_content=False))
        return self.pacer.usage()

    def close(self) -> None:
        self._transport.clear()
        for client in self._api_clients:
            client.close()
        self._api_clients.clear()


# --- request and answer shapes -------------------------------------------------------------------
MALFORMED = "MALFORMED_ANSWER"


def _answer(response: Any, expect: str | None) -> Json:
    """The JSON object of a 2xx answer, or a retryable CrmError quoting (bounded, escaped) what came."""
    data: bytes = response.data or b""
    status = getattr(response, "status", None)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and (expect is None or isinstance(answer.get(expect), list)):
        return answer
    what = "is not JSON" if answer is None else f"is JSON without a {expect!r} list"
    excerpt = ascii(data[:200].decode("utf-8", errors="replace")) + ("..." if len(data) > 200 else "")
    raise CrmError(Action.RETRY, f"HubSpot's answer {what}: {excerpt}", code=MALFORMED, status=status)


def _mark(cursor: Cursor) -> Mark | None:
    if cursor.modified_at is None:
        return None
    last = cursor.last_id or ""
    return Mark(ms_of(cursor.modified_at), int(last) if last.isdigit() else 0)


def _changed_at(item: Json, status_field: str, entered: bool) -> datetime | None:
    """When the record's status was set: for lifecyclestage, the date it entered its current stage where
    HubSpot keeps one; else the newest entry of the property's history."""
    props = item.get("properties") or {}
    current = props.get(status_field)
    if entered and current and props.get(f"hs_v2_date_entered_{current}"):
        return at_ms(to_ms(str(props[f"hs_v2_date_entered_{current}"])))
    history = (item.get("propertiesWithHistory") or {}).get(status_field) or []
    stamps = [to_ms(str(h["timestamp"])) for h in history if isinstance(h, dict) and h.get("timestamp")]
    return at_ms(max(stamps)) if stamps else None


def _cursor(mark: Mark) -> Cursor:
    return Cursor(at_ms(mark.ms), str(mark.id) if mark.id > 0 else None)


def _search_body(search: Search, modified: str, properties: list[str]) -> PublicObjectSearchRequest:
    after = None
    if search.tie_ms is not None:
        filters = [{"propertyName": modified, "operator": "EQ", "value": str(search.tie_ms)}]
        if search.keyset is not None:
            filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": str(search.keyset)})
        after = str(search.offset) if search.offset else None
        sort = "hs_object_id"
    else:
        filters = [{"propertyName": modified, "operator": "LTE", "value": str(search.until_ms)}]
        if search.since_ms is not None:
            operator = "GTE" if search.inclusive else "GT"
            filters.append({"propertyName": modified, "operator": operator, "value": str(search.since_ms)})
        sort = modified
    return PublicObjectSearchRequest(
        filter_groups=[{"filters": filters}],
        sorts=[{"propertyName": sort, "direction": "ASCENDING"}],
        properties=list(dict.fromkeys(properties)),
        limit=SEARCH_PAGE,
        after=after,
    )
