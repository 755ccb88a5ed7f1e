"""The HubSpot webhook receiver: HubSpot's v3 signature, the replay window, the body's checks, and which
records each event names. Requests are signed here with hubspot-api-client's own `Signature`, so the
receiver is checked against HubSpot's code, not against itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hubspot.utils.signature import Signature
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from connector.config import HubSpotSource, HubSpotWebhooks
from connector.webhooks.base import MAX_BODY, Notice, NoticeKind, RefusalReason, Refused, WebhookRequest
from connector.webhooks.hubspot import HubSpotReceiver
from connector.webhooks.hubspot_signature import sign_v3, signed_uri

SECRET = "8a2b6c1e-5d4f-4b3a-9c7e-0f1d2e3c4b5a"
URL = "https://connector.example.com/webhooks/hubspot"
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
PORTAL = 4_000_000
PROPERTIES = {"contacts": frozenset({"hs_lead_status", "hubspot_owner_id"}), "companies": frozenset({"lifecyclestage"})}


def receiver(**settings: Any) -> HubSpotReceiver:
    portal = settings.pop("portal_id", None)
    config = HubSpotWebhooks(app_secret=SecretStr(settings.pop("secret", SECRET)), **settings)
    return HubSpotReceiver("hubspot", config, PROPERTIES, portal_id=portal)


def event(subscription_type: str, object_id: int = 1001, **extra: Any) -> dict[str, Any]:
    return {
        "eventId": 1, "subscriptionId": 25, "portalId": PORTAL, "appId": 54321, "occurredAt": 1764489600000,
        "subscriptionType": subscription_type, "attemptNumber": 0, "objectId": object_id, "changeSource": "CRM_UI",
        **extra,
    }  # fmt: skip


def signed(
    body: bytes | list[dict[str, Any]],
    *,
    url: str = URL,
    seen_url: str | None = None,
    secret: str = SECRET,
    sent: datetime = NOW,
    received: datetime = NOW + timedelta(seconds=2),
) -> WebhookRequest:
    """A request as HubSpot signs it, received `received`, at `seen_url` (default: where it was sent)."""
    raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    timestamp = str(int(sent.timestamp() * 1000))
    signature = Signature.get_signature(secret, raw.decode(), "v3", url, "POST", timestamp)
    headers = {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": timestamp,
               "content-type": "application/json"}  # fmt: skip
    return WebhookRequest("POST", seen_url or url, headers, raw, received)


def notices(body: list[dict[str, Any]], **settings: Any) -> list[Notice]:
    found, reply = receiver(**settings).receive(signed(body))
    assert (reply.status, reply.body) == (200, b"")
    return list(found)


def refusal(request: WebhookRequest, **settings: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        receiver(**settings).receive(request)
    return caught.value


# --- the signature ---------------------------------------------------------------------------------
def test_our_signature_is_the_one_in_hubspots_own_client_tests() -> None:
    # hubspot-api-python, tests/spec/utils/test_signature.py::test_get_signature__v3: a recorded answer.
    body = b"{'example_field':'example_value'}"
    signature = sign_v3("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", "POST", "https://www.example.com/webhook_uri",
                        body, "15000000")  # fmt: skip
    assert signature == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="


def test_that_example_passes_the_signature_and_is_refused_as_not_hubspots_json() -> None:
    config = HubSpotWebhooks(app_secret=SecretStr("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"))
    request = WebhookRequest(
        "POST", "https://www.example.com/webhook_uri",
        {"x-hubspot-signature-v3": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
         "x-hubspot-request-timestamp": "15000000"},
        b"{'example_field':'example_value'}", datetime.fromtimestamp(15000, UTC) + timedelta(seconds=1),
    )  # fmt: skip
    with pytest.raises(Refused) as caught:
        HubSpotReceiver("hubspot", config, PROPERTIES).receive(request)
    assert (caught.value.status, caught.value.reason) == (400, RefusalReason.MALFORMED)


def test_the_uri_decodes_only_the_escapes_hubspots_guide_lists() -> None:
    url = "https://h.example.com/hook%3Fa%3Db%2Fc%2a%20d%253A?x=%40y%2Cz%26w"
    assert signed_uri(url) == "https://h.example.com/hook?a%3Db/c*%20d%253A?x=@y,z%26w"  # = and & stay encoded


def test_a_genuine_request_is_accepted_with_an_empty_200() -> None:
    assert notices([event("contact.propertyChange", propertyName="hs_lead_status", propertyValue="OPEN")]) == [
        Notice("contacts", ("1001",), NoticeKind.CHANGE)
    ]


def test_a_url_with_escaped_characters_is_checked_as_hubspot_signs_it() -> None:
    # HubSpot signs the decoded form; the server sees what was sent, escapes and all.
    seen = "https://connector.example.com/webhooks/hubspot?tenant=acme%3Aeu"
    request = signed([event("contact.creation")], url=signed_uri(seen), seen_url=seen)
    assert receiver().receive(request)[1].status == 200


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"secret": "another-apps-secret"}, 401, RefusalReason.SIGNATURE),
        ({"url": "https://connector.example.com/webhooks/other"}, 401, RefusalReason.SIGNATURE),
        ({"sent": NOW - timedelta(minutes=5, seconds=1), "received": NOW}, 401, RefusalReason.REPLAY),
        ({"sent": NOW + timedelta(minutes=2), "received": NOW}, 401, RefusalReason.REPLAY),
    ],
    ids=["wrong-secret", "changed-url", "older-than-5-minutes", "from-the-future"],
)
def test_refusals_of_the_signature_and_window(change: dict[str, Any], status: int, reason: RefusalReason) -> None:
    url = change.pop("url", URL)
    request = signed([event("contact.creation")], seen_url=url, **change)
    refused = refusal(request)
    assert (refused.status, refused.reason) == (status, reason)


def test_a_tampered_body_is_refused() -> None:
    request = signed([event("contact.creation", object_id=1001)])
    forged = WebhookRequest(request.method, request.url, request.headers, request.body.replace(b"1001", b"1002"),
                            request.received_at)  # fmt: skip
    assert refusal(forged).reason is RefusalReason.SIGNATURE


def test_a_forgery_with_an_old_timestamp_counts_as_a_bad_signature_not_a_replay() -> None:
    request = signed([event("contact.creation")], secret="guess", sent=NOW - timedelta(hours=1), received=NOW)
    assert refusal(request).reason is RefusalReason.SIGNATURE


def test_max_age_comes_from_the_config() -> None:
    request = signed([event("contact.creation")], sent=NOW - timedelta(seconds=90), received=NOW)
    assert receiver().receive(request)[1].status == 200
    assert refusal(request, max_age=timedelta(seconds=60)).reason is RefusalReason.REPLAY


@pytest.mark.parametrize("header", ["x-hubspot-signature-v3", "x-hubspot-request-timestamp"])
def test_a_missing_header_is_refused(header: str) -> None:
    request = signed([event("contact.creation")])
    headers = {k: v for k, v in request.headers.items() if k != header}
    refused = refusal(WebhookRequest("POST", URL, headers, request.body, request.received_at))
    assert (refused.status, refused.reason) == (401, RefusalReason.SIGNATURE)


def test_a_timestamp_that_is_not_milliseconds_is_refused() -> None:
    request = signed([event("contact.creation")])
    headers = {**request.headers, "x-hubspot-request-timestamp": "yesterday"}
    assert refusal(WebhookRequest("POST", URL, headers, request.body, NOW)).reason is RefusalReason.SIGNATURE


def test_a_default_port_the_server_adds_is_not_part_of_the_signed_url() -> None:
    seen = "https://connector.example.com:443/webhooks/hubspot"
    assert receiver().receive(signed([event("contact.creation")], seen_url=seen))[1].status == 200
    other_port = "https://connector.example.com:8443/webhooks/hubspot"
    assert refusal(signed([event("contact.creation")], seen_url=other_port)).reason is RefusalReason.SIGNATURE


def test_behind_a_proxy_the_configured_target_url_is_what_was_signed() -> None:
    seen = "http://127.0.0.1:9108/webhooks/hubspot"
    request = signed([event("contact.creation")], url="https://hooks.example.com/crm/hubspot", seen_url=seen)
    assert refusal(request).reason is RefusalReason.SIGNATURE
    assert receiver(url="https://hooks.example.com/crm/hubspot").receive(request)[1].status == 200


def test_only_post_is_accepted() -> None:
    request = signed([event("contact.creation")])
    get = WebhookRequest("GET", URL, request.headers, b"", request.received_at)
    assert (refusal(get).status, refusal(get).reason) == (405, RefusalReason.METHOD)


# --- the body ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'{"subscriptionType": "contact.creation"}',
        b"[]",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps([event("contact.creation")] * 101).encode(),
        json.dumps(["contact.creation"]).encode(),
        json.dumps([{k: v for k, v in event("contact.creation").items() if k != "objectId"}]).encode(),
        json.dumps([event("contact.creation", object_id="12; DROP TABLE")]).encode(),  # type: ignore[arg-type]
        json.dumps([{**event("contact.creation"), "portalId": True}]).encode(),
        json.dumps([{**event("contact.creation"), "occurredAt": "today"}]).encode(),
        json.dumps([event("contact.propertyChange")]).encode(),  # no propertyName
        json.dumps([event("contact.merge", mergedObjectIds="1002")]).encode(),
        json.dumps([event("object.creation")]).encode(),  # no objectTypeId
    ],
    ids=["not-json", "not-an-array", "empty", "deeply-nested", "101-events", "not-objects", "no-objectId",
         "id-not-numeric", "portal-bool", "occurredAt-text", "no-propertyName", "merged-not-list", "no-typeId"],
)
def test_a_body_that_is_not_hubspots_is_refused_without_echoing_it(body: bytes) -> None:
    refused = refusal(signed(body))
    assert (refused.status, refused.reason) == (400, RefusalReason.MALFORMED)
    assert "DROP" not in refused.message and "html" not in refused.message and len(refused.message) < 120


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "subscriptionType": st.sampled_from(["contact.creation", "contact.merge", "object.propertyChange"]) | _JSON,
        "objectId": st.integers(-2, 10**25) | _JSON, "portalId": st.integers(0, 9) | _JSON,
        "eventId": st.integers(0, 9) | _JSON, "occurredAt": st.integers(0, 9) | _JSON,
        "propertyName": st.sampled_from(["hs_lead_status"]) | _JSON, "objectTypeId": st.sampled_from(["0-1"]) | _JSON,
        "mergedObjectIds": st.lists(st.integers(0, 9) | _JSON, max_size=3) | _JSON,
        "primaryObjectId": st.integers(0, 9) | _JSON, "attemptNumber": _JSON,
    },
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(_EVENTISH, max_size=5) | _JSON)
def test_any_signed_json_is_either_accepted_or_refused_as_malformed(body: Any) -> None:
    # Whatever a sender with the secret puts in the body, the receiver answers: no other exception.
    request = signed(json.dumps(body).encode())
    try:
        found, reply = receiver().receive(request)
    except Refused as refused:
        assert (refused.status, refused.reason) == (400, RefusalReason.MALFORMED)
    else:
        assert reply.status == 200 and all(n.record_ids and all(i.isdigit() for i in n.record_ids) for n in found)


def test_an_oversized_body_is_refused_before_its_signature_is_checked() -> None:
    request = signed(b"[" + b" " * MAX_BODY + b"]")
    refused = refusal(request)
    assert (refused.status, refused.reason) == (413, RefusalReason.TOO_LARGE)


# --- events to notices -----------------------------------------------------------------------------
def test_each_kind_of_event_names_its_records() -> None:
    body = [
        event("contact.propertyChange", 1, propertyName="hs_lead_status", propertyValue="OPEN"),
        event("contact.propertyChange", 2, propertyName="hubspot_owner_id", propertyValue="77"),
        event("contact.creation", 3),
        event("contact.deletion", 4),
        event("contact.privacyDeletion", 5),
        event("contact.restore", 6),
        event("contact.merge", 7, primaryObjectId=7, mergedObjectIds=[8, 9], newObjectId=7, numberOfPropertiesMoved=4),
        event("company.propertyChange", 20, propertyName="lifecyclestage", propertyValue="customer"),
        event("company.creation", 21),
        event("object.propertyChange", 10, objectTypeId="0-1", propertyName="hs_lead_status", propertyValue="NEW"),
        event("object.deletion", 22, objectTypeId="0-2"),
    ]
    assert notices(body) == [
        Notice("contacts", ("1", "2", "10"), NoticeKind.CHANGE),
        Notice("contacts", ("3", "6"), NoticeKind.CREATION),
        Notice("contacts", ("4", "5"), NoticeKind.DELETION),
        Notice("contacts", ("7", "8", "9"), NoticeKind.MERGE),
        Notice("companies", ("20",), NoticeKind.CHANGE),
        Notice("companies", ("21",), NoticeKind.CREATION),
        Notice("companies", ("22",), NoticeKind.DELETION),
    ]


def test_a_merge_into_a_new_record_names_the_new_one_too() -> None:
    body = [event("contact.merge", 7, primaryObjectId=7, mergedObjectIds=[8], newObjectId=12)]
    assert notices(body) == [Notice("contacts", ("7", "8", "12"), NoticeKind.MERGE)]


def test_the_guides_example_payload_with_event_type_is_understood() -> None:
    # developers.hubspot.com/docs/api/webhooks, "Webhook payloads": the example names the type `eventType`.
    body = [
        {"objectId": 1246965, "propertyName": "lifecyclestage", "propertyValue": "subscriber",
         "changeSource": "ACADEMY", "eventId": 3816279340, "subscriptionId": 25, "portalId": 33, "appId": 1160452,
         "occurredAt": 1462216307945,
         "eventType": "contact.propertyChange", "attemptNumber": 0},
        {"objectId": 1246978, "changeSource": "IMPORT", "eventId": 3816279480, "subscriptionId": 22, "portalId": 33,
         "appId": 1160452, "occurredAt": 1462216307945, "eventType": "contact.creation", "attemptNumber": 0},
    ]  # fmt: skip
    config = HubSpotWebhooks(app_secret=SecretStr(SECRET))
    found, _ = HubSpotReceiver("hubspot", config, {"contacts": frozenset({"lifecyclestage"})}).receive(signed(body))
    assert list(found) == [Notice("contacts", ("1246965",), NoticeKind.CHANGE),
                           Notice("contacts", ("1246978",), NoticeKind.CREATION)]  # fmt: skip


def test_ids_are_named_once_per_notice() -> None:
    change = event("contact.propertyChange", 1, propertyName="hs_lead_status", propertyValue="OPEN")
    assert notices([change, {**change, "eventId": 2}, event("contact.creation", 1)]) == [
        Notice("contacts", ("1",), NoticeKind.CHANGE), Notice("contacts", ("1",), NoticeKind.CREATION)
    ]  # fmt: skip


def test_what_moves_nothing_we_sync_is_accepted_and_ignored() -> None:
    body = [
        event("contact.propertyChange", 1, propertyName="firstname", propertyValue="Ada"),
        event("deal.creation", 2),
        event("object.creation", 3, objectTypeId="0-3"),
        event("contact.associationChange", 4, fromObjectId=4, toObjectId=5, associationType="CONTACT_TO_COMPANY"),
        event("conversation.newMessage", 5),
        event("company.propertyChange", 6, propertyName="hs_lead_status", propertyValue="OPEN"),
    ]
    assert notices(body) == []


def test_an_event_we_do_not_act_on_never_gets_a_genuine_batch_refused() -> None:
    association = {"eventId": 2, "portalId": PORTAL, "occurredAt": 1764489600000, "attemptNumber": 0,
                   "subscriptionType": "contact.associationChange", "fromObjectId": 1, "toObjectId": 9}  # fmt: skip
    merge = event("contact.merge", 7, primaryObjectId=7, mergedObjectIds=[8])
    del merge["objectId"]
    assert notices([association, merge, event("contact.creation", 3)]) == [
        Notice("contacts", ("7", "8"), NoticeKind.MERGE), Notice("contacts", ("3",), NoticeKind.CREATION)
    ]  # fmt: skip


def test_events_of_another_hubspot_account_are_ignored_when_the_portal_is_configured() -> None:
    ours = event("contact.creation", 1)
    theirs = {**event("contact.creation", 2), "portalId": 999}
    assert notices([ours, theirs], portal_id=PORTAL) == [Notice("contacts", ("1",), NoticeKind.CREATION)]
    assert notices([ours, theirs]) == [Notice("contacts", ("1", "2"), NoticeKind.CREATION)]


def test_from_config_reads_the_status_owner_and_extra_fields(tmp_path: Path) -> None:
    source = HubSpotSource.model_validate({
        "type": "hubspot", "auth": {"method": "token", "access_token": "t"}, "portal_id": PORTAL,
        "webhooks": {"app_secret": SECRET},
        "objects": {"contacts": {"status_field": "hs_lead_status", "mapping": str(tmp_path / "m.yaml"),
                                 "owner_field": "hubspot_owner_id", "fields": ["jobtitle"]}},
    })  # fmt: skip
    built = HubSpotReceiver.from_config("hubspot", source)
    names = ["hs_lead_status", "hubspot_owner_id", "jobtitle", "firstname"]
    body = [event("contact.propertyChange", n, propertyName=p, propertyValue="x") for n, p in enumerate(names, 1)]
    found, _ = built.receive(signed(body))
    assert list(found) == [Notice("contacts", ("1", "2", "3"), NoticeKind.CHANGE)]
