"""Outbound Messages from the sandbox org, sent as Salesforce sends them (docs/crm-behaviour.md).

An admin defines an Outbound Message on an object (the fields to send, the endpoint URL) and a
workflow rule or record-triggered flow that fires it: when a record is created, or created and every
time it is edited, or created and edited to subsequently meet the rule's criteria. Saves from any
source fire it: a person in the UI, a data load, an API write (the save order runs workflow for every
insert and update). Deletions fire nothing; a merge is a deletion of the losers and an update of the
winner, so only the winner is sent.

Like Salesforce, a background sender batches up to 100 notifications per SOAP message, renders each
record's data when it sends (a record changed after queuing goes out with its latest data), counts a
delivery only when the answer is `notificationsResponse` / `Ack` true, and retries anything else with
growing intervals until the notification is too old, then drops it. Salesforce retries for 24 hours
with intervals up to 2 hours; here the times are seconds, set on the instance (`retry_first`,
`retry_max`, `give_up_after`). Every message sent is recorded (url, headers, body, answer) so a test
can replay or tamper with one.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import requests

OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
WHEN = ("created", "created_or_edited", "created_or_edited_to_meet")
BATCH = 100  # notifications per message (the WSDL's maxOccurs)

Criteria = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class OutboundMessageDef:
    """One Outbound Message and the rule (workflow or flow) that fires it."""

    action_id: str  # 04k...: the ActionId of every message it sends
    obj: str
    endpoint_url: str
    fields: tuple[str, ...]  # Id first, then the admin's choice
    when: str
    criteria: Criteria | None = None  # the rule's criteria; None: every record

    def fires(self, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
        """Workflow evaluation at save time (the three evaluation criteria of a workflow rule)."""
        if new.get("IsDeleted") or (old is not None and old.get("IsDeleted")):
            return False  # deletions fire no workflow rule; undelete is not modelled
        meets = self.criteria is None or self.criteria(new)
        if old is None or self.when == "created_or_edited":
            return meets
        if self.when == "created":
            return False
        return meets and not (self.criteria is None or self.criteria(old))


@dataclass(frozen=True)
class SentMessage:
    """One POST as it went out, and what came back (`status` None: no answer at all)."""

    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    acked: bool
    notification_ids: tuple[str, ...]
    record_ids: tuple[str, ...]
    at: float  # time.monotonic()
    retry_in: float | None = None  # the interval before these notifications are tried again (None: acked)


@dataclass
class _Pending:
    notification_id: str
    definition: OutboundMessageDef
    record_id: str
    queued_at: float
    due: float
    attempts: int = 0


def check_endpoint(url: str) -> None:
    """Salesforce's rule for endpoint URLs: http or https; port 80 only for http, 443 only for https,
    or any port from 1024 to 66535 (its docs' bound) for either."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) endpoint URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = port >= 1024 or (port, parts.scheme) in ((80, "http"), (443, "https"))
    if not allowed:
        raise ValueError(f"Salesforce does not send to port {port} over {parts.scheme}")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def render(org_id: str, action_id: str, instance_url: str, api_version: str, obj: str,
           notifications: list[tuple[str, Mapping[str, Any]]], fields: tuple[str, ...]) -> bytes:
    """The `notifications` SOAP message, laid out as a recorded real one: null fields left out."""
    org15 = org_id[:15]
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">',
        " <soapenv:Body>",
        f'  <notifications xmlns="{OUTBOUND}">',
        f"   <OrganizationId>{org_id}</OrganizationId>",
        f"   <ActionId>{action_id}</ActionId>",
        '   <SessionId xsi:nil="true"/>',
        f"   <EnterpriseUrl>{escape(instance_url)}/services/Soap/c/{api_version}/{org15}</EnterpriseUrl>",
        f"   <PartnerUrl>{escape(instance_url)}/services/Soap/u/{api_version}/{org15}</PartnerUrl>",
    ]
    for notification_id, record in notifications:
        lines += ["   <Notification>", f"    <Id>{notification_id}</Id>",
                  f'    <sObject xsi:type={quoteattr("sf:" + obj)} xmlns:sf="{SOBJECT}">']
        for name in fields:
            if record.get(name) is not None:
                lines.append(f"     <sf:{name}>{escape(_value(record[name]))}</sf:{name}>")
        lines += ["    </sObject>", "   </Notification>"]
    lines += ["  </notifications>", " </soapenv:Body>", "</soapenv:Envelope>", ""]
    return "\n".join(lines).encode()


def is_ack(status: int, body: bytes) -> bool:
    """A delivery counts only as HTTP 200 with notificationsResponse/Ack true."""
    if status != 200 or len(body) > 65_536 or b"<!DOCTYPE" in body.upper():
        return False
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return False
    ack = root.find(f".//{{{OUTBOUND}}}notificationsResponse/{{{OUTBOUND}}}Ack")
    return ack is not None and (ack.text or "").strip() == "true"


@dataclass(eq=False)
class Outbox:
    """The org's queue of notifications and the thread that sends them."""

    org_id: str
    read: Callable[[str, list[str]], list[Mapping[str, Any]]]  # (object, ids) -> records, under the org's lock
    instance_url: Callable[[], str]  # for EnterpriseUrl / PartnerUrl
    api_version: Callable[[], str]
    retry_first: float = 0.05  # seconds before the first retry (Salesforce: seconds to minutes)
    retry_max: float = 1.0  # the longest interval between retries (Salesforce: 2 hours)
    give_up_after: float = 10.0  # a notification older than this is dropped (Salesforce: 24 hours)
    batch_delay: float = 0.02  # changes made within this window go out in one message
    timeout: float = 5.0  # per POST
    verify: str | bool = True  # CA bundle for https endpoints
    definitions: list[OutboundMessageDef] = field(default_factory=list)
    sent: list[SentMessage] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (notification Id, record Id)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._in_flight = 0
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # the endpoint is what the admin typed, not a proxy's

    # --- what the org calls -----------------------------------------------------------------
    def watches(self, obj: str) -> bool:
        return any(d.obj == obj for d in self.definitions)

    def changed(self, obj: str, old: Mapping[str, Any] | None, new: Mapping[str, Any],
                new_id: Callable[[], str]) -> None:
        """A record was saved: queue a notification for each rule that fires on it."""
        now = time.monotonic()
        with self._cond:
            for definition in self.definitions:
                if definition.obj != obj or not definition.fires(old, new):
                    continue
                # A notification not yet tried absorbs a later change of its record: it is rendered
                # when sent, so it carries the latest data either way (as Salesforce's does).
                if any(p.definition is definition and p.record_id == new["Id"] and p.attempts == 0
                       for p in self._pending):
                    continue
                self._pending.append(_Pending(new_id(), definition, new["Id"], now, now + self.batch_delay))
            self._cond.notify_all()
        self._ensure_thread()

    # --- what tests call --------------------------------------------------------------------
    def pause(self) -> None:
        """Hold every message (as if the queue were backed up), e.g. to make one big batch."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + self._in_flight

    def in_flight(self) -> int:
        """Notifications in a POST that has not been answered yet."""
        with self._cond:
            return self._in_flight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every notification is delivered or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def messages(self) -> list[SentMessage]:
        with self._cond:
            return list(self.sent)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            # A POST in flight is not waited for beyond a second: the daemon thread ends when it returns.
            self._thread.join(timeout=1.0)
            self._thread = None

    # --- the sender ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="sandbox-outbound", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._http.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                while batch is None and not self._stopping:
                    self._cond.wait(self._wait_time())
                    batch = self._next_batch()
                if self._stopping or batch is None:
                    return
                self._in_flight += len(batch)
            try:
                self._deliver(batch)
            finally:
                with self._cond:
                    self._in_flight -= len(batch)
                    self._cond.notify_all()

    def _wait_time(self) -> float | None:
        if self._paused or not self._pending:
            return None
        return max(0.0, min(p.due for p in self._pending) - time.monotonic())

    def _next_batch(self) -> list[_Pending] | None:
        """Up to 100 due notifications of one Outbound Message, oldest first; taken off the queue."""
        if self._paused:
            return None
        now = time.monotonic()
        expired = [p for p in self._pending if now - p.queued_at > self.give_up_after]
        for item in expired:
            self._pending.remove(item)
            self.dropped.append((item.notification_id, item.record_id))
        due = sorted((p for p in self._pending if p.due <= now), key=lambda p: p.due)
        if not due:
            if expired:
                self._cond.notify_all()
            return None
        # Fresh notifications of the same Outbound Message ride along even if their short batching
        # delay has not run out; retries wait for their own time.
        first = due[0]
        batch = [first] + [p for p in self._pending if p is not first and p.definition is first.definition
                           and (p.due <= now or p.attempts == 0)]
        batch = sorted(batch, key=lambda p: p.queued_at)[:BATCH]
        for item in batch:
            self._pending.remove(item)
        return batch

    def _deliver(self, batch: list[_Pending]) -> None:
        definition = batch[0].definition
        records = self.read(definition.obj, [p.record_id for p in batch])
        body = render(self.org_id, definition.action_id, self.instance_url(), self.api_version(), definition.obj,
                      [(p.notification_id, r) for p, r in zip(batch, records, strict=True)], definition.fields)
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        status: int | None = None
        acked = False
        try:
            answer = self._http.post(definition.endpoint_url, data=body, headers=headers, timeout=self.timeout,
                                     verify=self.verify, allow_redirects=False)
            status, acked = answer.status_code, is_ack(answer.status_code, answer.content)
        except requests.RequestException:
            pass  # no answer: retried like a refusal
        now = time.monotonic()
        with self._cond:
            # Salesforce: "the interval between retries increases exponentially, up to a maximum".
            attempts = max(p.attempts for p in batch) + 1
            retry_in = None if acked else min(self.retry_first * 2 ** (attempts - 1), self.retry_max)
            self.sent.append(SentMessage(definition.endpoint_url, headers, body, status, acked,
                                         tuple(p.notification_id for p in batch),
                                         tuple(p.record_id for p in batch), now, retry_in))
            if retry_in is None:
                return
            for item in batch:
                item.attempts += 1
                item.due = now + min(self.retry_first * 2 ** (item.attempts - 1), self.retry_max)
                self._pending.append(item)
