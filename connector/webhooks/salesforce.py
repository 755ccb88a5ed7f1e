"""Salesforce Outbound Messages: the SOAP `notifications` call a workflow rule or flow sends on a change.

The message (Salesforce's Outbound Messaging WSDL, namespace http://soap.sforce.com/2005/09/outbound)
carries the sending org's `OrganizationId`, the `ActionId`, an optional `SessionId`, two API URLs, and
1 to 100 `Notification`s, each a notification `Id` and an `sObject` (`xsi:type="sf:Lead"`) holding its
`sf:Id` and the fields the admin chose. Salesforce counts a delivery only when the answer is the
`notificationsResponse` with `<Ack>true</Ack>`; anything else is retried for up to 24 hours. So a
message we can read but do not need (an sObject type we do not sync) is acknowledged, and only what
is not genuine or not readable is refused.

What we trust: nothing in the message but the record Ids. The fields it carries are ignored; the
intake pulls those records through the API, so a forged or replayed message costs one read. Genuine
means: the `token` query parameter when one is configured (Salesforce signs nothing; a secret in the
endpoint URL is what the admin can add), and the org's own Id (docs: "Considerations for Security").

A message cannot tell a creation from an edit (a workflow rule fires on both), so every notice is a
CHANGE; the pull finds out whether a record is new to the store. Deletions and merges send nothing
(workflow rules and flows do not fire on delete); the scheduled pull and reconcile see them.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from connector.config import SalesforceSource, SalesforceWebhooks
from connector.webhooks import soap
from connector.webhooks.base import (
    MAX_BODY,
    Notice,
    NoticeKind,
    RefusalReason,
    Refused,
    WebhookReply,
    WebhookRequest,
)

OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
MAX_NOTIFICATIONS = 100  # the WSDL's maxOccurs

# The answer Salesforce expects, byte for byte as listeners that work send it.
ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
    b" <soapenv:Body>\n"
    b'  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">\n'
    b"   <Ack>true</Ack>\n"
    b"  </notificationsResponse>\n"
    b" </soapenv:Body>\n"
    b"</soapenv:Envelope>\n"
)
ACK_REPLY = WebhookReply(200, "text/xml; charset=utf-8", ACK)

_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?")
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def id18(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character Salesforce Id; None if it is not a valid one.

    The last three characters encode which of the first fifteen are upper case, so an 18-character
    Id whose suffix does not match its first fifteen is not an Id Salesforce made.
    """
    if not _ID.fullmatch(value):
        return None
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, c in enumerate(value[start : start + 5]) if "A" <= c <= "Z")
        suffix += _SUFFIX[bits]
    if len(value) == 18 and value[15:] != suffix:
        return None
    return value[:15] + suffix


def same_org(a: str, b: str) -> bool:
    """Two org Ids name the same org: the first 15 characters are the Id (case-sensitive); compared in
    constant time so a caller cannot learn our org Id a character at a time."""
    return hmac.compare_digest(a[:15].encode(), b[:15].encode())


@dataclass(frozen=True)
class OutboundMessage:
    """What we read of one `notifications` call."""

    organization_id: str
    action_id: str
    records: tuple[tuple[str, str], ...]  # (sObject type as sent, 18-character record Id), in message order


def _malformed(message: str) -> Refused:
    return Refused(400, RefusalReason.MALFORMED, message)


def read_message(body: bytes) -> OutboundMessage:
    """Parse and check an Outbound Message; raises `Refused` (400 MALFORMED) saying what is wrong."""
    try:
        notifications = soap.body_of(soap.parse(body))
    except soap.XmlRefused as error:
        raise _malformed(f"not a Salesforce Outbound Message: {error}") from None
    if (notifications.ns, notifications.name) != (OUTBOUND, "notifications"):
        raise _malformed("not a Salesforce Outbound Message: the SOAP body is not an outbound `notifications` call")
    orgs = notifications.all(OUTBOUND, "OrganizationId")
    if len(orgs) != 1 or id18(orgs[0].text.strip()) is None:
        raise _malformed("exactly one OrganizationId, a Salesforce Id, is required")
    org = orgs[0]
    action = notifications.child(OUTBOUND, "ActionId")
    items = notifications.all(OUTBOUND, "Notification")
    if not 1 <= len(items) <= MAX_NOTIFICATIONS:
        raise _malformed(f"a message holds 1 to {MAX_NOTIFICATIONS} Notification elements, not {len(items)}")
    records = []
    for position, item in enumerate(items, start=1):
        sobject = item.child(OUTBOUND, "sObject")
        kind = (sobject.attr(soap.XSI, "type") or "").rpartition(":")[2] if sobject is not None else ""
        record = sobject.child(SOBJECT, "Id") if sobject is not None else None
        record_id = id18(record.text.strip()) if record is not None else None
        if sobject is None or not re.fullmatch(r"[A-Za-z0-9_]{1,80}", kind) or record_id is None:
            raise _malformed(f"Notification {position}: an sObject with an xsi:type and a valid sf:Id is required")
        records.append((kind, record_id))
    return OutboundMessage(org.text.strip(), action.text.strip() if action is not None else "", tuple(records))


def token_of(url: str) -> str | None:
    """The `token` query parameter of the URL Salesforce called; None when absent or given twice."""
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("token", [])
    return values[0] if len(values) == 1 else None


class SalesforceReceiver:
    """`/webhooks/<source>` for one Salesforce source: Outbound Messages about its synced objects."""

    def __init__(self, source: str, webhooks: SalesforceWebhooks, objects: Iterable[str]) -> None:
        self.source = source
        self._org = webhooks.organization_id
        self._token = webhooks.token.get_secret_value().encode() if webhooks.token is not None else None
        # Salesforce's API names are case-insensitive; a notice names the object as the config does.
        self._objects = {name.lower(): name for name in objects}

    @classmethod
    def from_config(cls, name: str, source: SalesforceSource) -> SalesforceReceiver:
        if source.webhooks is None:
            raise ValueError(f"source {name}: webhooks are not configured")
        return cls(name, source.webhooks, source.objects)

    def receive(self, request: WebhookRequest) -> tuple[Sequence[Notice], WebhookReply]:
        if request.method.upper() != "POST":
            raise Refused(405, RefusalReason.METHOD, "Outbound Messages are POSTed")
        self._check_token(request.url)
        if len(request.body) > MAX_BODY:
            raise Refused(413, RefusalReason.TOO_LARGE, f"the body is larger than {MAX_BODY} bytes")
        message = read_message(request.body)
        if not same_org(message.organization_id, self._org):
            raise Refused(403, RefusalReason.ORGANIZATION,
                          "the message comes from another Salesforce org than this source's organization_id")
        return self._notices(message), ACK_REPLY

    def _check_token(self, url: str) -> None:
        if self._token is None:
            return
        given = token_of(url)
        # compare_digest on bytes: constant time whatever the given token holds.
        if given is None or not hmac.compare_digest(given.encode(), self._token):
            raise Refused(401, RefusalReason.SIGNATURE, "the endpoint URL's token is missing or wrong")

    def _notices(self, message: OutboundMessage) -> list[Notice]:
        """One CHANGE notice per synced object, Ids in message order without repeats; other types are
        acknowledged and dropped (refusing them would only make Salesforce retry for a day)."""
        by_object: dict[str, dict[str, None]] = {}
        for kind, record_id in message.records:
            name = self._objects.get(kind.lower())
            if name is not None:
                by_object.setdefault(name, {})[record_id] = None
        return [Notice(name, tuple(ids), NoticeKind.CHANGE) for name, ids in by_object.items()]
