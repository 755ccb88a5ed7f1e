"""The HubSpot stand-in's webhooks, received over real loopback HTTP by the connector's own receiver:
what each change sends, batching, retries with attemptNumber, recorded requests replayed and forged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput, SimplePublicObjectInputForCreate
from pydantic import SecretStr
from urllib3.util.retry import Retry

from connector.config import HubSpotWebhooks
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.hubspot_webhooks import SentRequest, WebhookSender, signed_headers
from connector.webhooks.base import Notice, NoticeKind, RefusalReason, Refused, WebhookRequest
from connector.webhooks.hubspot import HubSpotReceiver
from tests.webhook_support import Catcher, catching

SECRET = "sandbox-app-client-secret"
STATUS = [("contact.propertyChange", "hs_lead_status")]
LIFECYCLE = ("contact.creation", None), ("contact.deletion", None), ("contact.merge", None)


@pytest.fixture(scope="module")
def started() -> Iterator[HubSpotSandbox]:
    with HubSpotSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(started: HubSpotSandbox) -> Iterator[HubSpotSandbox]:
    started.reset()
    started.rate_limit, started.search_rate_per_second = 0, 0
    yield started
    started.unsubscribe_webhooks()


@pytest.fixture
def endpoint() -> Iterator[Catcher]:
    config = HubSpotWebhooks(app_secret=SecretStr(SECRET))
    properties = {"contacts": frozenset({"hs_lead_status"}), "companies": frozenset({"lifecyclestage"})}
    with catching(HubSpotReceiver("hubspot", config, properties, portal_id=4_000_000)) as catcher:
        yield catcher


def subscribe(sandbox: HubSpotSandbox, endpoint: Catcher, subscriptions: Any = STATUS, **options: Any) -> WebhookSender:
    return sandbox.subscribe_webhooks(endpoint.url, SECRET, subscriptions, **options)


def events(sent: SentRequest) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = json.loads(sent.body)
    return body


def settled(sender: WebhookSender) -> list[SentRequest]:
    assert sender.wait_idle(timeout=10)
    return sender.sent()


def test_the_signatures_are_the_ones_hubspot_documents() -> None:
    # The v1 example of HubSpot's "Validating requests" guide, and the v3 value in hubspot-api-python's
    # tests/spec/utils/test_signature.py: both recorded, neither computed by our receiver.
    secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
    guide = (b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
             b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
             b'"changeFlag":"NEW","appId":54321}]')  # fmt: skip
    v1 = signed_headers(secret, "https://www.example.com/webhook_uri", guide, "0")["X-HubSpot-Signature"]
    assert v1 == "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    example = b"{'example_field':'example_value'}"
    v3 = signed_headers(secret, "https://www.example.com/webhook_uri", example, "15000000")["X-HubSpot-Signature-v3"]
    assert v3 == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="


def test_the_guides_example_body_is_a_creation_notice(endpoint: Catcher) -> None:
    guide = (b'[{"eventId":1,"subscriptionId":12345,"portalId":4000000,"occurredAt":1564113600000,'
             b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
             b'"changeFlag":"NEW","appId":54321}]')  # fmt: skip
    now = datetime.now(UTC)
    headers = signed_headers(SECRET, endpoint.url, guide, str(int(now.timestamp() * 1000)))
    assert endpoint.receiver is not None
    notices, reply = endpoint.receiver.receive(received(SentRequest("POST", endpoint.url, headers, guide, None), now))
    assert reply.status == 200 and list(notices) == [Notice("contacts", ("123",), NoticeKind.CREATION)]


def test_a_persons_status_edit_is_a_signed_property_change_the_receiver_accepts(
    sandbox: HubSpotSandbox, endpoint: Catcher
) -> None:
    [contact] = sandbox.seed("contacts", [{"email": "a@example.com", "hs_lead_status": "NEW"}])
    sender = subscribe(sandbox, endpoint)
    sandbox.edit_as_person("contacts", contact, hs_lead_status="OPEN", firstname="Ada")
    [sent] = settled(sender)
    [only] = events(sent)
    assert only["subscriptionType"] == "contact.propertyChange"
    assert (only["objectId"], only["propertyName"], only["propertyValue"]) == (int(contact), "hs_lead_status", "OPEN")
    assert (only["changeSource"], only["attemptNumber"], only["portalId"]) == ("CRM_UI", 0, 4_000_000)
    assert sent.status == 200 and endpoint.refusals == []
    assert endpoint.notices == [Notice("contacts", (contact,), NoticeKind.CHANGE)]


def test_setting_the_same_value_again_sends_nothing(sandbox: HubSpotSandbox, endpoint: Catcher) -> None:
    [contact] = sandbox.seed("contacts", [{"email": "a@example.com", "hs_lead_status": "NEW"}])
    sender = subscribe(sandbox, endpoint)
    sandbox.edit_as_person("contacts", contact, hs_lead_status="NEW")
    sandbox.edit_as_person("contacts", contact, hs_lead_status="OPEN")
    assert [e["propertyValue"] for s in settled(sender) for e in events(s)] == ["OPEN"]


def test_creation_archive_and_merge_are_sent_and_name_every_record(
    sandbox: HubSpotSandbox, endpoint: Catcher
) -> None:
    sender = subscribe(sandbox, endpoint, LIFECYCLE)
    first, second, third = sandbox.seed("contacts", [{"email": f"p{n}@example.com"} for n in range(3)])
    sandbox.archive("contacts", third)
    sandbox.merge("contacts", first, second)
    sent = [e for s in settled(sender) for e in events(s)]
    kinds = ["contact.creation"] * 3 + ["contact.deletion"] * 2 + ["contact.merge"]
    assert [e["subscriptionType"] for e in sent] == kinds
    assert [e["objectId"] for e in sent if e["subscriptionType"] == "contact.deletion"] == [int(third), int(second)]
    merge = sent[-1]
    assert (merge["primaryObjectId"], merge["mergedObjectIds"]) == (int(first), [int(second)])
    assert set(endpoint.notices) == {
        Notice("contacts", (first, second, third), NoticeKind.CREATION),
        Notice("contacts", (third, second), NoticeKind.DELETION),
        Notice("contacts", (first, second), NoticeKind.MERGE),
    }


def test_writes_through_the_api_are_sent_too_unless_told_otherwise(sandbox: HubSpotSandbox, endpoint: Catcher) -> None:
    ids = sandbox.seed("contacts", [{"email": f"p{n}@example.com", "hs_lead_status": "NEW"} for n in range(2)])
    client = HubSpot(access_token=sandbox.token, host=sandbox.url, retry=Retry(total=0))
    update = BatchInputSimplePublicObjectBatchInput(inputs=[{"id": ids[0], "properties": {"hs_lead_status": "OPEN"}}])

    sender = subscribe(sandbox, endpoint)
    client.crm.contacts.batch_api.update(update)
    [echoed] = [e for s in settled(sender) for e in events(s)]
    assert (echoed["objectId"], echoed["changeSource"]) == (int(ids[0]), "API")

    sender = subscribe(sandbox, endpoint, echo_api_writes=False)
    update.inputs[0]["properties"]["hs_lead_status"] = "CONNECTED"
    client.crm.contacts.batch_api.update(update)
    sandbox.edit_as_person("contacts", ids[1], hs_lead_status="OPEN")
    assert [e["objectId"] for s in settled(sender) for e in events(s)] == [int(ids[1])]


def test_creations_and_archives_through_the_api_are_sent(sandbox: HubSpotSandbox, endpoint: Catcher) -> None:
    client = HubSpot(access_token=sandbox.token, host=sandbox.url, retry=Retry(total=0))
    sender = subscribe(sandbox, endpoint, LIFECYCLE)
    made = client.crm.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties={"email": "n@example.com"}))
    client.crm.contacts.basic_api.archive(made.id)
    sent = [(e["subscriptionType"], e["objectId"], e["changeSource"]) for s in settled(sender) for e in events(s)]
    assert sent == [("contact.creation", int(made.id), "API"), ("contact.deletion", int(made.id), "API")]


def test_events_close_together_go_in_requests_of_at_most_100(sandbox: HubSpotSandbox, endpoint: Catcher) -> None:
    sender = subscribe(sandbox, endpoint, [("contact.creation", None)], delay=0.3)
    sandbox.seed("contacts", [{"email": f"p{n}@example.com"} for n in range(150)])
    sent = settled(sender)
    assert [len(events(s)) for s in sent] == [100, 50]
    assert all(s.status == 200 for s in sent) and len(endpoint.notices) == 2


def test_the_generic_object_form_carries_the_object_type_id(sandbox: HubSpotSandbox, endpoint: Catcher) -> None:
    sender = subscribe(sandbox, endpoint, [("object.propertyChange", "lifecyclestage", "company")])
    [company] = sandbox.seed("companies", [{"name": "Acme"}])
    sandbox.edit_as_person("companies", company, lifecyclestage="customer")
    [only] = [e for s in settled(sender) for e in events(s)]
    assert (only["subscriptionType"], only["objectTypeId"]) == ("object.propertyChange", "0-2")
    assert endpoint.notices == [Notice("companies", (company,), NoticeKind.CHANGE)]


def test_failures_and_timeouts_are_retried_with_the_next_attempt_number(
    sandbox: HubSpotSandbox, endpoint: Catcher
) -> None:
    endpoint.scripted.extend([503, 1.5, 429])  # 1.5: answers after the sender's timeout
    sender = subscribe(sandbox, endpoint, [("contact.creation", None)], timeout=1.0, backoff=0.01, retries=3)
    [contact] = sandbox.seed("contacts", [{"email": "a@example.com"}])
    sent = settled(sender)
    assert [(s.status, s.error) for s in sent] == [(503, None), (None, "TimeoutError"), (429, None), (200, None)]
    assert [events(s)[0]["attemptNumber"] for s in sent] == [0, 1, 2, 3]
    assert len({events(s)[0]["eventId"] for s in sent}) == 1
    assert endpoint.notices == [Notice("contacts", (contact,), NoticeKind.CREATION)]  # the last one, re-signed


def test_retries_are_bounded(sandbox: HubSpotSandbox, endpoint: Catcher) -> None:
    endpoint.scripted.extend([500] * 10)
    sender = subscribe(sandbox, endpoint, [("contact.creation", None)], backoff=0.01, retries=2)
    sandbox.seed("contacts", [{"email": "a@example.com"}])
    assert [s.status for s in settled(sender)] == [500, 500, 500]


def test_stopping_abandons_a_retry_that_waits(sandbox: HubSpotSandbox, endpoint: Catcher) -> None:
    endpoint.scripted.extend([500] * 10)
    sender = subscribe(sandbox, endpoint, [("contact.creation", None)], backoff=3600.0)
    sandbox.seed("contacts", [{"email": "a@example.com"}])
    while not sender.sent():
        sender.wait_idle(timeout=0.01)
    sandbox.unsubscribe_webhooks()
    assert not sender.running and len(sender.sent()) == 1


def received(sent: SentRequest, at: datetime) -> WebhookRequest:
    return WebhookRequest(sent.method, sent.url, {k.lower(): v for k, v in sent.headers.items()}, sent.body, at)


def test_a_recorded_request_replayed_later_is_refused_and_a_forged_one_too(
    sandbox: HubSpotSandbox, endpoint: Catcher
) -> None:
    [contact] = sandbox.seed("contacts", [{"email": "a@example.com"}])
    sender = subscribe(sandbox, endpoint)
    sandbox.edit_as_person("contacts", contact, hs_lead_status="OPEN")
    [sent] = settled(sender)
    assert endpoint.receiver is not None
    now = datetime.now(UTC)
    assert endpoint.receiver.receive(received(sent, now))[1].status == 200  # within the window: HubSpot's own retry

    with pytest.raises(Refused) as replayed:
        endpoint.receiver.receive(received(sent, now + timedelta(minutes=6)))
    assert replayed.value.reason is RefusalReason.REPLAY

    forged = received(sent, now)
    forged = WebhookRequest(forged.method, forged.url, forged.headers,
                            forged.body.replace(b'"OPEN"', b'"UNQUALIFIED"'), now)  # fmt: skip
    with pytest.raises(Refused) as tampered:
        endpoint.receiver.receive(forged)
    assert tampered.value.reason is RefusalReason.SIGNATURE


def test_a_receiver_with_another_secret_refuses_what_the_sandbox_sends(sandbox: HubSpotSandbox) -> None:
    config = HubSpotWebhooks(app_secret=SecretStr("not-the-apps-secret"))
    with catching(HubSpotReceiver("hubspot", config, {"contacts": frozenset({"hs_lead_status"})})) as wrong:
        sender = sandbox.subscribe_webhooks(wrong.url, SECRET, [("contact.creation", None)], retries=0)
        sandbox.seed("contacts", [{"email": "a@example.com"}])
        assert [s.status for s in settled(sender)] == [401]
        assert [r.reason for r in wrong.refusals] == [RefusalReason.SIGNATURE]
