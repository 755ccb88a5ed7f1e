"""The HubSpot stand-in, driven through the real hubspot-api-client as the connector drives it."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
)
from hubspot.crm.objects import ApiException as ObjectsApiException
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.discovery.discovery_base import DiscoveryBase
from urllib3.util.retry import Retry

from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.hubspot_search import Record, SortedIndex, dt_to_ms, search

T0 = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
Connect = Callable[..., HubSpot]
# Each API package of the client raises its own ApiException class.
ApiException = (ContactsApiException, ObjectsApiException, PropertiesApiException)


@pytest.fixture(scope="module")
def started() -> Iterator[HubSpotSandbox]:
    with HubSpotSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(started: HubSpotSandbox) -> Iterator[HubSpotSandbox]:
    """One server for the module (stopping one takes half a second); a fresh portal per test, with a
    fixed clock and no rate limits unless the test sets them, so that none is hit by chance."""
    started.reset()
    started.clock = lambda: T0
    started.rate_limit, started.rate_window, started.search_rate_per_second = 0, 10.0, 0
    started.daily_limit, started.lifecycle_backwards = 1_000_000, "ignore"
    yield started
    started.timer = time.monotonic
    started.server.faults.clear()


@pytest.fixture
def connect(sandbox: HubSpotSandbox) -> Iterator[Connect]:
    """Real clients on the sandbox. Retries are off: urllib3's default would silently resend a request
    after a dropped connection, and a test must see exactly what the server answered. Every API object
    the client makes owns a connection pool; all of them are closed at the end."""
    apis: list[Any] = []

    def factory(package: Any, name: str, config: dict[str, Any]) -> Any:
        api = DiscoveryBase._default_api_factory(package, name, config)
        apis.append(api)
        return api

    def make(token: str | None = sandbox.token) -> HubSpot:
        return HubSpot(access_token=token, host=sandbox.url, retry=Retry(total=0), api_factory=factory)

    yield make
    for api in apis:
        api.api_client.rest_client.pool_manager.clear()


@pytest.fixture
def hub(connect: Connect) -> HubSpot:
    return connect()


def contacts(n: int, **values: Any) -> list[dict[str, Any]]:
    return [{"email": f"p{i}@example.com", "firstname": f"P{i}", **values} for i in range(n)]


def find(
    hub: HubSpot,
    *filters: dict[str, Any],
    groups: list[list[dict[str, Any]]] | None = None,
    object_type: str = "contacts",
    **request: Any,
) -> Any:
    body = PublicObjectSearchRequest(filter_groups=[{"filters": g} for g in groups or [list(filters)]], **request)
    return hub.crm.objects.search_api.do_search(object_type, body)


def error_of(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


def search_raw(hub: HubSpot, body: PublicObjectSearchRequest) -> dict[str, Any]:
    """A search without the client's model objects, which cost tens of milliseconds a page."""
    response = hub.crm.contacts.search_api.do_search(public_object_search_request=body, _preload_content=False)
    try:
        answer: dict[str, Any] = json.loads(response.data)
        return answer
    finally:
        response.release_conn()


# --- auth and reading ----------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["not-the-token", None])
def test_a_missing_or_wrong_token_is_refused_as_hubspot_does(connect: Connect, token: str | None) -> None:
    with pytest.raises(ApiException) as exc:
        connect(token).crm.contacts.basic_api.get_page()
    assert exc.value.status == 401
    body = error_of(exc)
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.")
    assert body["status"] == "error" and len(body["correlationId"]) == 36


def test_list_pages_through_every_record_in_id_order(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    ids = sandbox.seed("contacts", contacts(230, hs_lead_status="NEW"))
    sandbox.archive("contacts", ids[5])
    api, seen, after = hub.crm.contacts.basic_api, [], None
    while True:
        page = api.get_page(limit=100, after=after, properties=["hs_lead_status", "email"])
        seen += [r.id for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert seen == [i for i in ids if i != ids[5]]
    first = api.get_page(limit=1).results[0]
    assert set(first.properties) == {"email", "firstname", "lastname", "createdate", "lastmodifieddate", "hs_object_id"}
    assert first.updated_at == T0 and first.properties["lastmodifieddate"] == "2024-03-01T09:30:00.000Z"
    archived = api.get_page(archived=True)
    assert [r.id for r in archived.results] == [ids[5]] and archived.results[0].archived
    with pytest.raises(ApiException) as exc:
        api.get_page(limit=101)
    assert exc.value.status == 400


def test_get_and_patch_one_record_bumps_its_modified_date(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    (contact,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"))
    api = hub.crm.contacts.basic_api
    assert api.get_by_id(contact, properties=["hs_lead_status"]).properties["hs_lead_status"] == "NEW"
    later = T0 + timedelta(minutes=5, milliseconds=7)
    sandbox.clock = lambda: later
    updated = api.update(contact, SimplePublicObjectInput(properties={"hs_lead_status": "CONNECTED"}))
    assert updated.properties["hs_lead_status"] == "CONNECTED"
    assert sandbox.record("contacts", contact)["lastmodifieddate"] == "2024-03-01T09:35:00.007Z"
    assert sandbox.writes("contacts") == [(contact, {"hs_lead_status": "CONNECTED"})]
    with pytest.raises(ApiException) as exc:
        api.get_by_id("987654")
    assert exc.value.status == 404 and error_of(exc)["category"] == "OBJECT_NOT_FOUND"
    with pytest.raises(ApiException) as exc:
        api.update(contact, SimplePublicObjectInput(properties={"hs_lead_status": "SOMETHING"}))
    assert exc.value.status == 400
    assert "INVALID_OPTION" in error_of(exc)["message"] and error_of(exc)["category"] == "VALIDATION_ERROR"


# --- search --------------------------------------------------------------------------------------
def test_search_operators(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    a, b = sandbox.seed("contacts", contacts(2, hs_lead_status="NEW", country="NL"), modified_at=T0)
    c, d = sandbox.seed("contacts", contacts(2, hs_lead_status="OPEN"), modified_at=T0 + timedelta(seconds=1))

    def ids(*filters: dict[str, Any], **kw: Any) -> list[str]:
        return [r.id for r in find(hub, *filters, **kw).results]

    t1 = str(dt_to_ms(T0 + timedelta(seconds=1)))
    assert ids({"propertyName": "hs_lead_status", "operator": "EQ", "value": "NEW"}) == [a, b]
    assert ids({"propertyName": "hs_lead_status", "operator": "NEQ", "value": "NEW"}) == [c, d]
    assert ids({"propertyName": "hs_object_id", "operator": "GT", "value": b}) == [c, d]
    assert ids({"propertyName": "hs_object_id", "operator": "LTE", "value": b}) == [a, b]
    assert ids({"propertyName": "lastmodifieddate", "operator": "GTE", "value": t1}) == [c, d]
    assert ids({"propertyName": "lastmodifieddate", "operator": "LT", "value": "2024-03-01T09:30:01Z"}) == [a, b]
    assert ids({"propertyName": "hs_object_id", "operator": "IN", "values": [a, d]}) == [a, d]
    assert ids({"propertyName": "hs_lead_status", "operator": "NOT_IN", "values": ["OPEN"]}) == [a, b]
    assert ids({"propertyName": "country", "operator": "HAS_PROPERTY"}) == [a, b]
    assert ids({"propertyName": "country", "operator": "NOT_HAS_PROPERTY"}) == [c, d]
    either = [
        [{"propertyName": "hs_object_id", "operator": "EQ", "value": a}],
        [{"propertyName": "hs_object_id", "operator": "EQ", "value": d}],
    ]
    assert ids(groups=either) == [a, d]  # groups are ORed
    both = [
        {"propertyName": "hs_lead_status", "operator": "EQ", "value": "NEW"},
        {"propertyName": "hs_object_id", "operator": "GT", "value": a},
    ]
    assert ids(*both) == [b]  # filters in a group are ANDed
    with pytest.raises(ApiException) as exc:
        ids({"propertyName": "no_such_property", "operator": "EQ", "value": "x"})
    assert exc.value.status == 400


def test_search_honours_one_sort_with_ties_in_id_order_and_pages_with_a_total(
    sandbox: HubSpotSandbox, hub: HubSpot
) -> None:
    early = sandbox.seed("contacts", contacts(3), modified_at=T0)
    late = sandbox.seed("contacts", contacts(3), modified_at=T0 + timedelta(hours=1))
    sorts = [
        {"propertyName": "lastmodifieddate", "direction": "DESCENDING"},
        {"propertyName": "hs_object_id", "direction": "DESCENDING"},
    ]  # the second is ignored
    seen, after, totals = [], None, set()
    while True:
        page = find(hub, sorts=sorts, limit=4, after=after, properties=["email"])
        seen += [r.id for r in page.results]
        totals.add(page.total)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert seen == late + early and totals == {6}
    assert set(page.results[0].properties) == {"email", "createdate", "lastmodifieddate", "hs_object_id"}


def test_search_refuses_past_10000_results_and_oversized_requests(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    sandbox.seed("contacts", contacts(10_050))
    last = find(hub, limit=200, after="9800")
    assert last.total == 10_050 and len(last.results) == 200 and last.paging.next.after == "10000"
    for limit, after in ((200, "9900"), (1, "10000")):
        with pytest.raises(ApiException) as exc:
            find(hub, limit=limit, after=after)
        assert exc.value.status == 400
        assert error_of(exc)["category"] == "VALIDATION_ERROR"
        assert error_of(exc)["message"] == "There was a problem with the request."
    with pytest.raises(ApiException) as exc:
        find(hub, limit=201)
    assert exc.value.status == 400
    six_groups = [[{"propertyName": "hs_object_id", "operator": "GT", "value": "0"}]] * 6
    with pytest.raises(ApiException) as exc:
        find(hub, groups=six_groups)
    assert exc.value.status == 400


def test_25000_records_on_one_millisecond_read_completely_by_keyset(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    ids = sandbox.seed("contacts", contacts(25_000), modified_at=T0)
    instant = str(dt_to_ms(T0))
    seen: list[str] = []
    while True:
        body = PublicObjectSearchRequest(
            filter_groups=[
                {
                    "filters": [
                        {"propertyName": "lastmodifieddate", "operator": "EQ", "value": instant},
                        {"propertyName": "hs_object_id", "operator": "GT", "value": seen[-1] if seen else "0"},
                    ]
                }
            ],
            sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            properties=["hs_object_id"],
            limit=200,
        )
        page = search_raw(hub, body)
        if not seen:
            assert page["total"] == 25_000  # more than offset paging can reach
        seen += [r["id"] for r in page["results"]]
        if "paging" not in page:
            break
    assert seen == ids


def test_search_plans_agree_with_a_full_scan() -> None:
    """The index shortcuts must give what a scan gives: same matches, same order, same total."""
    rng = random.Random(7)
    table = _Table()
    for i in range(1, 400):
        table.records[i] = Record(i, {"hs_lead_status": rng.choice(["NEW", "OPEN"])}, 0, rng.randrange(5))
    table.index.add_many(list(table.records.values()))
    shapes: list[list[list[dict[str, Any]]]] = [
        [[_f("hs_object_id", "GT", 100)]],
        [[_f("lastmodifieddate", "GTE", 2)]],
        [[_f("lastmodifieddate", "GT", 2)], [_f("lastmodifieddate", "EQ", 2), _f("hs_object_id", "GT", 150)]],
        [[_f("lastmodifieddate", "GTE", 1), _f("hs_object_id", "GT", 120), _f("hs_object_id", "LT", 300)]],
        [[_f("lastmodifieddate", "LTE", 3), _f("hs_object_id", "GTE", 50)]],
    ]
    for groups in shapes:
        for sort in ("hs_object_id", "-hs_object_id", "lastmodifieddate", "-lastmodifieddate", None):
            for after, limit in ((0, 25), (30, 25), (10, 0)):
                body: dict[str, Any] = {
                    "filterGroups": [{"filters": g} for g in groups],
                    "limit": limit,
                    "after": after,
                }
                if sort:
                    body["sorts"] = [sort]
                scanned = {
                    **body,
                    "filterGroups": [{"filters": [*g, _f("hs_lead_status", "HAS_PROPERTY")]} for g in groups],
                }
                assert search(table, body) == search(table, scanned), (groups, sort, after)


class _Table:
    created_prop, modified_prop = "createdate", "lastmodifieddate"

    def __init__(self) -> None:
        self.records: dict[int, Record] = {}
        self.index = SortedIndex()

    def kind(self, name: str) -> str | None:
        return {"hs_object_id": "number", "lastmodifieddate": "datetime", "hs_lead_status": "enumeration"}.get(name)

    def links_to(self, to_type: str) -> None:
        return None


def _f(name: str, operator: str, value: Any = None) -> dict[str, Any]:
    return {"propertyName": name, "operator": operator, "value": None if value is None else str(value)}


# --- batches -------------------------------------------------------------------------------------
def test_batch_read_reports_unknown_ids_in_a_207(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    a, b = sandbox.seed("contacts", contacts(2, hs_lead_status="NEW"))
    batch = hub.crm.contacts.batch_api
    read = batch.read(
        BatchReadInputSimplePublicObjectId(
            properties=["hs_lead_status"], properties_with_history=[], inputs=[{"id": a}, {"id": "424242"}, {"id": b}]
        )
    )
    assert [r.id for r in read.results] == [a, b] and read.status == "COMPLETE"
    assert read.num_errors == 1
    (error,) = read.errors
    assert error.category == "OBJECT_NOT_FOUND" and error.context == {"ids": ["424242"]}
    too_many = BatchReadInputSimplePublicObjectId(
        properties=[], properties_with_history=[], inputs=[{"id": str(i)} for i in range(101)]
    )
    with pytest.raises(ApiException) as exc:
        batch.read(too_many)
    assert exc.value.status == 400 and error_of(exc)["category"] == "VALIDATION_ERROR"


def test_batch_update_partial_failures_and_exactly_once_log(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    a, b, c = sandbox.seed("contacts", contacts(3, hs_lead_status="NEW"))
    sandbox.fail_writes([b], "VALIDATION_ERROR", "Lead status is locked by a workflow")
    batch = hub.crm.contacts.batch_api

    def update(*items: tuple[str, str]) -> Any:
        inputs = [{"id": i, "properties": {"hs_lead_status": s}} for i, s in items]
        return batch.update(BatchInputSimplePublicObjectBatchInput(inputs=inputs))

    answer = update((a, "OPEN"), (b, "OPEN"), (c, "CONNECTED"), ("777777", "OPEN"))
    assert sorted(r.id for r in answer.results) == [a, c]
    assert {e.category: e.context["ids"] for e in answer.errors} == {
        "VALIDATION_ERROR": [b],
        "OBJECT_NOT_FOUND": ["777777"],
    }
    assert answer.num_errors == 2
    assert update((b, "OPEN")).results[0].properties["hs_lead_status"] == "OPEN"  # the failure was once
    assert sandbox.writes() == [
        (a, {"hs_lead_status": "OPEN"}),
        (c, {"hs_lead_status": "CONNECTED"}),
        (b, {"hs_lead_status": "OPEN"}),
    ]
    for bad in ([(a, "LOST")], [(a, "OPEN"), (a, "CONNECTED")], [(a, "OPEN")] * 101):
        with pytest.raises(ApiException) as exc:
            update(*bad)
        assert exc.value.status == 400 and error_of(exc)["category"] == "VALIDATION_ERROR"
    # An invalid option fails the whole batch, valid inputs included, as HubSpot does.
    with pytest.raises(ApiException):
        update((a, "UNQUALIFIED"), (c, "LOST"))
    assert sandbox.record("contacts", a)["hs_lead_status"] == "OPEN" and len(sandbox.writes()) == 3


# --- properties ----------------------------------------------------------------------------------
def test_properties_api_describes_the_enumerations(hub: HubSpot) -> None:
    core = hub.crm.properties.core_api
    lead_status = core.get_by_name("contacts", "hs_lead_status")
    assert lead_status.type == "enumeration" and lead_status.field_type == "radio"
    assert [o.value for o in lead_status.options] == [
        "NEW",
        "OPEN",
        "IN_PROGRESS",
        "OPEN_DEAL",
        "UNQUALIFIED",
        "ATTEMPTED_TO_CONTACT",
        "CONNECTED",
        "BAD_TIMING",
    ]
    stages = core.get_by_name("companies", "lifecyclestage").options
    assert [o.value for o in stages][:2] == ["subscriber", "lead"] and [o.display_order for o in stages][:2] == [0, 1]
    custom = core.get_by_name("companies", "company_stage")
    assert [o.value for o in custom.options] == ["target", "engaged", "customer", "lost"] and not custom.hubspot_defined
    assert "hs_email_direction" in {p.name for p in core.get_all("emails").results}
    with pytest.raises(ApiException) as exc:
        core.get_by_name("contacts", "no_such_property")
    assert exc.value.status == 404 and error_of(exc)["status"] == "error"


# --- rate limits ---------------------------------------------------------------------------------
def test_the_rolling_limit_answers_429_with_hubspots_body_and_headers_then_recovers(
    sandbox: HubSpotSandbox, hub: HubSpot
) -> None:
    now = [100.0]
    sandbox.timer = lambda: now[0]
    sandbox.rate_limit, sandbox.rate_window = 3, 10.0
    api = hub.crm.contacts.basic_api
    remaining = []
    for _ in range(3):
        remaining.append(api.get_page_with_http_info()[2]["X-HubSpot-RateLimit-Remaining"])
        now[0] += 1
    assert remaining == ["2", "1", "0"]
    with pytest.raises(ApiException) as exc:
        api.get_page()
    assert exc.value.status == 429
    body = error_of(exc)
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert exc.value.headers["X-HubSpot-RateLimit-Max"] == "3"
    assert exc.value.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert exc.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert sandbox.rate_limited_count == 1 and sandbox.server.calls()[-1].status == 429
    now[0] = 110.0  # the first call leaves the rolling window
    _, status, headers = api.get_page_with_http_info()
    assert status == 200 and headers["X-HubSpot-RateLimit-Remaining"] == "0"
    now[0] = 125.0
    assert api.get_page_with_http_info()[2]["X-HubSpot-RateLimit-Remaining"] == "2"
    assert sandbox.calls_per_window() == [3, 1, 1] and sandbox.peak_rolling_calls() == 3


def test_searches_have_their_own_per_second_limit_and_no_limit_headers(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    now = [0.0]
    sandbox.timer = lambda: now[0]
    sandbox.search_rate_per_second, sandbox.rate_limit = 2, 1
    api = hub.crm.contacts.search_api
    for _ in range(2):
        _, status, headers = api.do_search_with_http_info(PublicObjectSearchRequest(limit=1))
        assert status == 200 and not [h for h in headers if h.lower().startswith("x-hubspot-ratelimit")]
    with pytest.raises(ApiException) as exc:
        api.do_search(PublicObjectSearchRequest(limit=1))
    assert exc.value.status == 429 and error_of(exc)["policyName"] == "SECONDLY"
    assert error_of(exc)["message"] == "You have reached your secondly limit."
    assert hub.crm.contacts.basic_api.get_page().results == []  # the rolling limit is another bucket
    now[0] = 1.0
    assert api.do_search(PublicObjectSearchRequest(limit=1)).total == 0


def test_the_daily_limit(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    sandbox.daily_limit = 2
    api = hub.crm.contacts.basic_api
    assert api.get_page_with_http_info()[2]["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
    api.get_page()
    with pytest.raises(ApiException) as exc:
        api.get_page()
    assert exc.value.status == 429 and error_of(exc)["policyName"] == "DAILY"
    assert exc.value.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"


# --- HubSpot's rules -----------------------------------------------------------------------------
def test_lifecyclestage_moves_backwards_only_after_being_cleared(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    (contact,) = sandbox.seed("contacts", contacts(1, lifecyclestage="customer"))
    api = hub.crm.contacts.basic_api

    def set_stage(stage: str) -> str:
        answer = api.update(contact, SimplePublicObjectInput(properties={"lifecyclestage": stage}))
        return str(answer.properties["lifecyclestage"])

    assert set_stage("lead") == "customer"  # acknowledged, not applied, as HubSpot does
    assert sandbox.record("contacts", contact)["lifecyclestage"] == "customer"
    assert set_stage("evangelist") == "evangelist"  # forward is fine
    assert set_stage("") == "None" and set_stage("lead") == "lead"  # cleared first, then set
    sandbox.lifecycle_backwards = "reject"
    with pytest.raises(ApiException) as exc:
        set_stage("subscriber")
    assert exc.value.status == 400 and error_of(exc)["category"] == "VALIDATION_ERROR"
    sandbox.edit_as_person("contacts", contact, lifecyclestage="subscriber")  # people may, in the UI
    assert sandbox.record("contacts", contact)["lifecyclestage"] == "subscriber"


def test_archived_records_leave_reads_and_searches(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    a, b = sandbox.seed("contacts", contacts(2))
    api = hub.crm.contacts.basic_api
    sandbox.archive("contacts", a)
    api.archive(b)
    for record_id in (a, b):
        with pytest.raises(ApiException) as exc:
            api.get_by_id(record_id)
        assert exc.value.status == 404
        assert api.get_by_id(record_id, archived=True).archived
    assert find(hub).total == 0
    assert sandbox.record("contacts", a)["email"] == "p0@example.com"


def test_engagements_and_the_contact_each_belongs_to(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    ann, bob = sandbox.seed("contacts", contacts(2))
    sandbox.clock = lambda: T0 + timedelta(minutes=1)
    reply = sandbox.add_engagement("emails", ann, {"hs_email_direction": "INCOMING_EMAIL"}, at=T0)
    sent = sandbox.add_engagement("emails", bob, {"hs_email_direction": "EMAIL", "hs_email_status": "SENT"})
    meeting = sandbox.add_engagement("meetings", bob, {"hs_meeting_outcome": "SCHEDULED"})
    since = {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(dt_to_ms(T0))}
    emails = find(hub, since, object_type="emails", properties=["hs_email_direction", "hs_timestamp"])
    assert [e.id for e in emails.results] == [reply, sent]
    assert emails.results[0].properties["hs_timestamp"] == "2024-03-01T09:30:00.000Z"
    links = hub.crm.associations.v4.batch_api.get_page(
        "emails", "contacts", BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": reply}, {"id": sent}])
    )
    assert {r._from.id: [t.to_object_id for t in r.to] for r in links.results} == {reply: [ann], sent: [bob]}
    assert links.results[0].to[0].association_types[0].type_id == 198
    on_bob = {"propertyName": "associations.contact", "operator": "EQ", "value": bob}
    assert [e.id for e in find(hub, on_bob, object_type="emails").results] == [sent]
    assert [m.id for m in find(hub, on_bob, object_type="meetings").results] == [meeting]
    missing = hub.crm.associations.v4.batch_api.get_page(
        "meetings", "contacts", BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": "31337"}])
    )
    assert missing.results == [] and missing.errors[0].category == "OBJECT_NOT_FOUND"
    listed = hub.crm.objects.basic_api.get_page("emails", associations=["contacts"])
    assert {e.id: e.associations["contacts"].results[0].id for e in listed.results} == {reply: ann, sent: bob}
    with pytest.raises(ValueError, match="allowed options"):
        sandbox.add_engagement("calls", ann, {"hs_call_status": "SHOUTING"})


def test_seed_refuses_what_hubspot_would_and_takes_its_own_dates(sandbox: HubSpotSandbox) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        sandbox.seed("contacts", [{"favourite_colour": "blue"}])
    with pytest.raises(ValueError, match="allowed options"):
        sandbox.seed("companies", [{"company_stage": "prospect"}])
    (company,) = sandbox.seed("companies", [{"name": "Acme", "hs_lastmodifieddate": "2023-01-02T03:04:05.678Z"}])
    assert sandbox.record("companies", company)["hs_lastmodifieddate"] == "2023-01-02T03:04:05.678Z"
    sandbox.add_option("companies", "company_stage", "prospect", "Prospect")
    sandbox.edit_as_person("companies", company, company_stage="prospect")
    assert sandbox.record("companies", company)["hs_lastmodifieddate"] == "2024-03-01T09:30:00.000Z"


# --- a real account's behaviour ------------------------------------------------------------------
def test_search_sees_each_record_as_it_was_lag_seconds_ago_reads_by_id_live(
    sandbox: HubSpotSandbox, hub: HubSpot
) -> None:
    now = [T0]
    sandbox.clock = lambda: now[0]
    (old,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=1))
    sandbox.set_search_lag(5)
    sandbox.edit_as_person("contacts", old, hs_lead_status="OPEN")
    (new,) = sandbox.seed("contacts", [{"email": "late@example.com"}])
    status = {"propertyName": "hs_lead_status", "operator": "HAS_PROPERTY"}
    (seen,) = find(hub, status, properties=["hs_lead_status"]).results
    assert seen.properties["hs_lead_status"] == "NEW"  # the old value, with its old modified date
    assert seen.properties["lastmodifieddate"] == "2024-02-29T09:30:00.000Z"
    assert find(hub).total == 1  # the new contact is not searchable yet
    live = hub.crm.contacts.basic_api.get_by_id(old, properties=["hs_lead_status"])
    assert live.properties["hs_lead_status"] == "OPEN"
    now[0] = T0 + timedelta(seconds=5)
    assert find(hub, status, properties=["hs_lead_status"]).results[0].properties["hs_lead_status"] == "OPEN"
    assert {r.id for r in find(hub).results} == {old, new}
    sandbox.index_late("contacts", old, 60)  # the next change of it reaches search a minute late
    sandbox.edit_as_person("contacts", old, hs_lead_status="CONNECTED")
    now[0] = T0 + timedelta(seconds=30)
    assert find(hub, status, properties=["hs_lead_status"]).results[0].properties["hs_lead_status"] == "OPEN"


@pytest.mark.parametrize("as_text", [False, True])
def test_ids_compare_as_numbers_or_as_text_in_filters(sandbox: HubSpotSandbox, hub: HubSpot, as_text: bool) -> None:
    sandbox.skip_ids(9_998 - 1_001)
    ids = sandbox.seed("contacts", contacts(4))  # 9998, 9999, 10000, 10001
    sandbox.ids_as_text = as_text
    found = find(hub, _f("hs_object_id", "GT", 9_999), sorts=["hs_object_id"])
    assert [r.id for r in found.results] == ([] if as_text else ids[2:])  # as text, "10000" > "9999" is false
    low = find(hub, _f("hs_object_id", "LTE", 9))
    assert low.total == (2 if as_text else 0)  # "10000" <= "9" as text, "9998" is not


def test_batch_update_answers_updated_at_and_history_has_hubspots_shape(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    now = [T0]
    sandbox.clock = lambda: now[0]
    (person,) = sandbox.seed("contacts", contacts(1, hs_lead_status="NEW"), modified_at=T0 - timedelta(days=9))
    sandbox.backdate("contacts", person, [("hs_lead_status", "NEW", T0 - timedelta(days=9))])
    now[0] = T0 + timedelta(minutes=1)
    inputs = [{"id": person, "properties": {"hs_lead_status": "OPEN", "lifecyclestage": "lead"}}]
    done = hub.crm.contacts.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=inputs))
    assert done.results[0].updated_at == now[0]
    body = BatchReadInputSimplePublicObjectId(
        inputs=[{"id": person}], properties=["lifecyclestage", "hs_v2_date_entered_lead"],
        properties_with_history=["hs_lead_status"],
    )  # fmt: skip
    (read,) = hub.crm.contacts.batch_api.read(body).results
    history = read.properties_with_history["hs_lead_status"]
    assert [(h.value, h.source_type, h.timestamp) for h in history] == [
        ("OPEN", "API", now[0]), ("NEW", "CRM_UI", T0 - timedelta(days=9)),
    ]  # newest first  # fmt: skip
    assert read.properties["hs_v2_date_entered_lead"] == "2024-03-01T09:31:00.000Z"


def test_a_merged_away_id_reads_as_its_survivor(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    keep, gone = sandbox.seed("contacts", contacts(2, hs_lead_status="NEW"))
    sandbox.merge("contacts", keep, gone)
    got = hub.crm.contacts.basic_api.get_by_id(gone, properties=["hs_merged_object_ids"])
    assert got.id == keep and got.properties["hs_merged_object_ids"] == gone
    assert find(hub).total == 1
    assert hub.crm.contacts.basic_api.get_page(archived=True).results == []  # merged is not archived


def test_a_missing_scope_answers_403_as_hubspot_does(sandbox: HubSpotSandbox, hub: HubSpot) -> None:
    sandbox.revoke_scope("meetings")
    sandbox.revoke_scope("contacts", write=True)
    with pytest.raises(ApiException) as read:
        hub.crm.objects.basic_api.get_page("meetings")
    body = error_of(read)
    assert read.value.status == 403 and body["category"] == "MISSING_SCOPES"
    assert body["message"].startswith("This app hasn't been granted all required scopes to make this call.")
    assert body["errors"][0]["context"] == {"requiredGranularScopes": ["crm.objects.contacts.read"]}
    hub.crm.contacts.basic_api.get_page()  # reading contacts is still allowed
    with pytest.raises(ApiException) as write:
        hub.crm.contacts.basic_api.create(SimplePublicObjectInput(properties={"email": "x@example.com"}))
    assert error_of(write)["errors"][0]["context"]["requiredGranularScopes"] == ["crm.objects.contacts.write"]


def _parsed(data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


@pytest.mark.parametrize("kind", ["html", "truncated", "shape"])
def test_a_malformed_200_can_be_injected(sandbox: HubSpotSandbox, hub: HubSpot, kind: str) -> None:
    sandbox.answer_malformed(kind)
    raw = hub.crm.contacts.basic_api.get_page(_preload_content=False)
    assert raw.status == 200 and not isinstance(_parsed(raw.data).get("results"), list)
    assert hub.crm.contacts.basic_api.get_page().results == []  # the next call is answered as usual
