"""The Salesforce Outbound Message receiver: what it accepts, what it answers, what it refuses and why.

SAMPLE follows a recorded real message (the request body in aspnet/WebHooks'
test/Microsoft.AspNetCore.WebHooks.FunctionalTest/Resources/RequestBodies/Salesforce.xml, captured from
an org on na73) and the WSDL in Salesforce's "Understanding the Outbound Messaging WSDL", with Leads in
place of Contacts. Its org, action and notification Ids are those of Salesforce's own sample payload
for a flow's Outbound Message (00D5e000000KQ2eEAG, 04k5e000000CaRkAAK, 04l5e00000Gx7QzAAJ), whose
18-character checksums the receiver verifies.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from connector.config import SalesforceWebhooks
from connector.webhooks.base import MAX_BODY, Notice, NoticeKind, RefusalReason, Refused, WebhookRequest
from connector.webhooks.salesforce import ACK, SalesforceReceiver, id18

ORG = "00D5e000000KQ2eEAG"
OTHER_ORG = "00D5e000000KQ2fEAG"
LEAD_1, LEAD_2 = "00Q5e00000AbCdEEAV", "00Q5e00000AbCdFEAV"
CONTACT = "0035e00000XyZ12AAF"
OPPORTUNITY = "0065e00000PqRsTAAV"
URL = "http://127.0.0.1:9108/webhooks/sfdc"

ENVELOPE = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">')
SAMPLE = f"""<?xml version="1.0" encoding="UTF-8"?>
{ENVELOPE}
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG}</OrganizationId>
   <ActionId>04k5e000000CaRkAAK</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/62.0/00D5e000000KQ2e</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/62.0/00D5e000000KQ2e</PartnerUrl>
   <Notification>
    <Id>04l5e00000Gx7QzAAJ</Id>
    <sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{LEAD_1}</sf:Id>
     <sf:LastModifiedDate>2026-11-30T07:41:02.000Z</sf:LastModifiedDate>
     <sf:Status>Working - Contacted</sf:Status>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l5e00000Gx7R0AAJ</Id>
    <sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{LEAD_2}</sf:Id>
     <sf:LastModifiedDate>2026-11-30T07:41:03.000Z</sf:LastModifiedDate>
     <sf:Status>Open - Not Contacted</sf:Status>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"""


def message(*records: tuple[str, str], org: str = ORG) -> bytes:
    """SAMPLE with other (type, Id) notifications and org."""
    items = "".join(
        f'<Notification><Id>04l5e00000Gx7R1AAJ</Id><sObject xsi:type="sf:{kind}" '
        f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>{rid}</sf:Id></sObject></Notification>'
        for kind, rid in records
    )
    head, _, rest = SAMPLE.partition("   <Notification>")
    tail = rest[rest.index("  </notifications>"):]
    return (head.replace(ORG, org) + items + tail).encode()


def receiver(org: str = ORG, token: str | None = None, objects: tuple[str, ...] = ("Lead", "Contact")
             ) -> SalesforceReceiver:
    hooks = SalesforceWebhooks(organization_id=org, token=SecretStr(token) if token is not None else None)
    return SalesforceReceiver("sfdc", hooks, objects)


def request(body: bytes | str, url: str = URL, method: str = "POST") -> WebhookRequest:
    raw = body.encode() if isinstance(body, str) else body
    headers = {"content-type": "text/xml; charset=utf-8", "soapaction": '""'}
    return WebhookRequest(method, url, headers, raw, datetime.now(UTC))


def refused(rcv: SalesforceReceiver, req: WebhookRequest) -> Refused:
    with pytest.raises(Refused) as caught:
        rcv.receive(req)
    return caught.value


# --- accepted ------------------------------------------------------------------------------------
def test_the_sample_message_names_its_leads_and_is_acknowledged() -> None:
    notices, reply = receiver().receive(request(SAMPLE))
    assert notices == [Notice("Lead", (LEAD_1, LEAD_2), NoticeKind.CHANGE)]
    assert (reply.status, reply.content_type, reply.body) == (200, "text/xml; charset=utf-8", ACK)


def test_the_ack_is_the_documented_notifications_response() -> None:
    root = ET.fromstring(ACK)
    ack = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body/"
                    "{http://soap.sforce.com/2005/09/outbound}notificationsResponse/"
                    "{http://soap.sforce.com/2005/09/outbound}Ack")
    assert ack is not None and ack.text == "true"


def test_unsynced_types_are_acknowledged_and_ignored() -> None:
    """Refusing them would make Salesforce retry the message for a day."""
    notices, reply = receiver().receive(request(message(("Opportunity", OPPORTUNITY))))
    assert (notices, reply.status, reply.body) == ([], 200, ACK)
    notices, _ = receiver().receive(request(message(("Opportunity", OPPORTUNITY), ("Contact", CONTACT),
                                                    ("Lead", LEAD_1))))
    assert notices == [Notice("Contact", (CONTACT,)), Notice("Lead", (LEAD_1,))]


def test_objects_are_named_as_in_the_config_and_ids_given_once_in_18_characters() -> None:
    rcv = receiver(objects=("lead",))
    notices, _ = rcv.receive(request(message(("Lead", LEAD_1), ("Lead", LEAD_1[:15]), ("Lead", LEAD_2))))
    assert notices == [Notice("lead", (LEAD_1, LEAD_2))]


@pytest.mark.parametrize(("configured", "sent"), [(ORG, ORG), (ORG[:15], ORG), (ORG, ORG[:15]),
                                                  (ORG[:15], ORG[:15])])
def test_15_and_18_character_org_ids_name_the_same_org(configured: str, sent: str) -> None:
    notices, reply = receiver(org=configured).receive(request(message(("Lead", LEAD_1), org=sent)))
    assert reply.status == 200 and notices == [Notice("Lead", (LEAD_1,))]


def test_the_right_token_is_accepted() -> None:
    _, reply = receiver(token="s3cret-Token").receive(request(SAMPLE, url=URL + "?token=s3cret-Token"))
    assert reply.status == 200


# --- refused -------------------------------------------------------------------------------------
def test_another_org_is_forbidden() -> None:
    error = refused(receiver(), request(message(("Lead", LEAD_1), org=OTHER_ORG)))
    assert (error.status, error.reason) == (403, RefusalReason.ORGANIZATION)
    assert OTHER_ORG[:15] not in error.message


def test_org_ids_are_case_sensitive_in_their_first_15_characters() -> None:
    """00D5e000000kq2e is another org than 00D5e000000KQ2e (its 18-character form differs too)."""
    other = id18("00D5e000000kq2e")
    assert other is not None
    error = refused(receiver(), request(message(("Lead", LEAD_1), org=other)))
    assert error.reason == RefusalReason.ORGANIZATION


@pytest.mark.parametrize("url", [URL, URL + "?token=wrong", URL + "?token=", URL + "?token=s3cret&token=s3cret",
                                 URL + "?Token=s3cret"])
def test_a_wrong_or_missing_token_is_unauthorized(url: str) -> None:
    error = refused(receiver(token="s3cret"), request(SAMPLE, url=url))
    assert (error.status, error.reason) == (401, RefusalReason.SIGNATURE)
    assert "s3cret" not in error.message


def test_the_token_is_checked_before_the_body_is_read() -> None:
    error = refused(receiver(token="s3cret"), request(b"not xml at all"))
    assert error.reason == RefusalReason.SIGNATURE


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>&lol2;</OrganizationId>
</notifications></soapenv:Body></soapenv:Envelope>"""
EXTERNAL_ENTITY = f"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
{SAMPLE.partition("?>")[2].replace("Working - Contacted", "&xxe;")}"""
BARE_DOCTYPE = '<?xml version="1.0"?><!DOCTYPE soapenv:Envelope SYSTEM "http://127.0.0.1:1/x.dtd">' + \
    SAMPLE.partition("?>")[2]


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS.encode(), EXTERNAL_ENTITY.encode(), BARE_DOCTYPE.encode(),
    EXTERNAL_ENTITY.replace('encoding="UTF-8"', "").encode("utf-16"),  # no ASCII "<!DOCTYPE" to search for
], ids=["internal-entities", "external-entity", "external-dtd", "utf-16"])
def test_a_dtd_or_entity_is_refused_as_malformed(body: bytes) -> None:
    error = refused(receiver(), request(body))
    assert (error.status, error.reason) == (400, RefusalReason.MALFORMED)
    assert "DTD" in error.message or "document type" in error.message


MARKER = "ZZ-secret-looking-content-ZZ"


@pytest.mark.parametrize("body", [
    f"<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'><{MARKER}>",  # not well-formed
    '{"OrganizationId": "' + MARKER + '"}',  # JSON
    f"<Envelope><Body><notifications>{MARKER}</notifications></Body></Envelope>",  # no SOAP namespace
    "<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'><soapenv:Body>"
    f"<query xmlns='urn:enterprise.soap.sforce.com'>{MARKER}</query></soapenv:Body></soapenv:Envelope>",
    "",
    SAMPLE.replace("<sf:Id>" + LEAD_1, "<sf:Id>" + MARKER),  # not a Salesforce Id
    SAMPLE.replace(LEAD_1, LEAD_1[:15] + "AAA"),  # an 18-character Id whose checksum is wrong
    SAMPLE.replace(f"<OrganizationId>{ORG}</OrganizationId>", ""),
    SAMPLE.replace("<ActionId>", f"<OrganizationId>{OTHER_ORG}</OrganizationId><ActionId>"),  # two orgs
    SAMPLE.replace(' xsi:type="sf:Lead"', ""),
], ids=["broken-xml", "json", "no-soap-namespace", "another-soap-call", "empty", "bad-id", "bad-checksum",
        "no-org", "two-orgs", "no-type"])
def test_malformed_bodies_are_refused_without_echoing_them(body: str) -> None:
    error = refused(receiver(), request(body))
    assert (error.status, error.reason) == (400, RefusalReason.MALFORMED)
    assert MARKER not in error.message and LEAD_1[:15] not in error.message


@pytest.mark.parametrize("count", [0, 101])
def test_a_message_holds_1_to_100_notifications(count: int) -> None:
    error = refused(receiver(), request(message(*[("Lead", LEAD_1)] * count)))
    assert error.reason == RefusalReason.MALFORMED
    notices, _ = receiver().receive(request(message(*[("Lead", LEAD_1)] * 100)))
    assert notices == [Notice("Lead", (LEAD_1,))]


def test_an_oversized_body_is_refused_unread() -> None:
    body = SAMPLE.replace("</soapenv:Envelope>", "<!--" + "x" * MAX_BODY + "--></soapenv:Envelope>")
    error = refused(receiver(), request(body))
    assert (error.status, error.reason) == (413, RefusalReason.TOO_LARGE)


def test_a_deeply_nested_body_is_refused() -> None:
    body = SAMPLE.replace("<sf:Status>", "<a>" * 50 + "<sf:Status>").replace("</sf:Status>",
                                                                                "</sf:Status>" + "</a>" * 50)
    assert refused(receiver(), request(body)).reason == RefusalReason.MALFORMED


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_only_post_is_accepted(method: str) -> None:
    error = refused(receiver(), request(SAMPLE, method=method))
    assert (error.status, error.reason) == (405, RefusalReason.METHOD)


def test_from_config_takes_the_sources_objects(tmp_path: Any) -> None:
    from connector.config import SalesforceSource

    source = SalesforceSource.model_validate({
        "type": "salesforce", "instance_url": "https://acme.my.salesforce.com",
        "auth": {"method": "token", "access_token": "x"},
        "objects": {"Lead": {"status_field": "Status", "mapping": str(tmp_path / "m.yaml")}},
        "webhooks": {"organization_id": ORG[:15]},
    })
    rcv = SalesforceReceiver.from_config("sfdc", source)
    notices, _ = rcv.receive(request(message(("Lead", LEAD_1), ("Contact", CONTACT))))
    assert rcv.source == "sfdc" and notices == [Notice("Lead", (LEAD_1,))]
