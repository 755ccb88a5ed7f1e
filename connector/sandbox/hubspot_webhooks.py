"""The HubSpot stand-in's webhooks: signed v3 POSTs of the portal's changes to a subscribed target URL.

Like HubSpot's (Webhooks API guide; docs/crm-behaviour.md gives the sources):
  * a request body is a JSON array of up to 100 events; events that happen within `delay` seconds of the
    first one waiting go out together;
  * each request carries `X-HubSpot-Signature-v3` (signed by hubspot-api-client's own `Signature`),
    `X-HubSpot-Request-Timestamp`, and the older v1 signature with `X-HubSpot-Signature-Version: v1`;
  * a connection failure, a timeout or an answer other than 2xx is retried with the same events and
    `attemptNumber` one higher, re-signed with a new timestamp. HubSpot retries 10 times over 24 hours;
    here `retries` times after `backoff`, 2 x `backoff`, ... seconds, stopped at once by `stop()`;
  * events are sent from a background thread, in the order they happened.

Every request sent is recorded (`sent()`), with its answer, so a test can replay one or tamper with it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.webhooks.hubspot_signature import signed_uri

MAX_EVENTS = 100


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer other than 2xx: a failure, retried like HubSpot's


# No proxy from the environment (the target is on loopback) and no redirects followed.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
_TYPE_IDS = {"contact": "0-1", "company": "0-2", "deal": "0-3", "ticket": "0-5"}


@dataclass(frozen=True)
class Subscription:
    """One of the app's subscriptions: `contact.propertyChange` of `hs_lead_status`, `contact.creation`,
    or the generic `object.creation` of `object_type` "contact"."""

    event_type: str
    property_name: str | None = None
    object_type: str | None = None  # the generic form's object (singular name)

    @classmethod
    def of(cls, spec: Subscription | tuple[str, str | None] | tuple[str, str | None, str]) -> Subscription:
        return spec if isinstance(spec, Subscription) else cls(*spec)

    def covers(self, object_type: str, action: str, property_name: str | None) -> bool:
        kind, _, wanted = self.event_type.partition(".")
        if wanted != action or (self.property_name is not None and self.property_name != property_name):
            return False
        return kind == object_type or (kind == "object" and self.object_type == object_type)

    def type_for(self, object_type: str) -> tuple[str, str | None]:
        """The subscriptionType an event carries, and the generic form's objectTypeId."""
        if self.event_type.startswith("object."):
            return self.event_type, _TYPE_IDS.get(object_type, object_type)
        return self.event_type, None


@dataclass(frozen=True)
class SentRequest:
    """One request as it went out, and what came back (`status` None: no answer)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    status: int | None
    error: str | None = None


@dataclass(frozen=True)
class _Batch:
    events: list[dict[str, Any]]


class WebhookSender:
    """Delivers the portal's events to one target URL. Thread-safe; `notify` never blocks on the network."""

    def __init__(
        self,
        target_url: str,
        app_secret: str,
        subscriptions: Iterable[Subscription | tuple[str, str | None] | tuple[str, str | None, str]],
        *,
        portal_id: int,
        app_id: int = 4_000_100,
        delay: float = 0.0,
        retries: int = 3,
        backoff: float = 0.05,
        timeout: float = 2.0,
        wall_ms: Callable[[], int],
    ) -> None:
        self.target_url = target_url
        self.subscriptions = [Subscription.of(s) for s in subscriptions]
        self._secret = app_secret
        self._portal_id, self._app_id = portal_id, app_id
        self.delay, self.retries, self.backoff, self.timeout = delay, retries, backoff, timeout
        self._wall_ms = wall_ms  # HubSpot's clock: signs X-HubSpot-Request-Timestamp
        self._queue: deque[dict[str, Any]] = deque()
        self._sent: list[SentRequest] = []
        self._busy = False
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._event_ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="sandbox-hubspot-webhooks", daemon=True)
        self._thread.start()

    # --- what the portal reports ---------------------------------------------------------------
    def notify(
        self,
        object_type: str,
        action: str,
        object_id: int,
        occurred_ms: int,
        *,
        property_name: str | None = None,
        property_value: str | None = None,
        change_source: str = "API",
        source_id: str | None = None,
        **extra: Any,
    ) -> None:
        """An event happened in the portal; queued for every subscription that covers it."""
        for subscription in self.subscriptions:
            if not subscription.covers(object_type, action, property_name):
                continue
            subscription_type, type_id = subscription.type_for(object_type)
            event: dict[str, Any] = {
                "eventId": next(self._event_ids),
                "subscriptionId": 1000 + self.subscriptions.index(subscription),
                "portalId": self._portal_id,
                "appId": self._app_id,
                "occurredAt": occurred_ms,
                "subscriptionType": subscription_type,
                "attemptNumber": 0,
                "objectId": object_id,
                "changeSource": change_source,
            }
            if type_id is not None:
                event["objectTypeId"] = type_id
            if source_id is not None:
                event["sourceId"] = source_id
            if property_name is not None:
                event["propertyName"], event["propertyValue"] = property_name, property_value or ""
            if action == "creation":
                event["changeFlag"] = "CREATED"
            event.update(extra)
            with self._cond:
                self._queue.append(event)
                self._cond.notify_all()

    # --- what a test reads -----------------------------------------------------------------------
    def sent(self) -> list[SentRequest]:
        with self._cond:
            return list(self._sent)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Waits until every queued event was delivered or given up; False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stops at once: a retry waiting is abandoned, queued events are dropped."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=self.timeout + 1)

    # --- the background thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if batch is not None:
                self._deliver(batch)
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _next_batch(self) -> _Batch | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._queue) or self._stopping.is_set())
            if self._stopping.is_set():
                return None
            self._busy = True
        if self.delay and self._stopping.wait(self.delay):  # meanwhile, more events join this request
            return None
        with self._cond:
            count = min(MAX_EVENTS, len(self._queue))
            return _Batch([self._queue.popleft() for _ in range(count)])

    def _deliver(self, batch: _Batch) -> None:
        for attempt in range(self.retries + 1):
            if attempt and self._stopping.wait(self.backoff * 2 ** (attempt - 1)):
                return
            events = [{**event, "attemptNumber": attempt} for event in batch.events]
            if self._post(json.dumps(events, separators=(",", ":")).encode()):
                return

    def _post(self, body: bytes) -> bool:
        headers = signed_headers(self._secret, self.target_url, body, str(self._wall_ms()))
        request = urllib.request.Request(self.target_url, data=body, headers=headers, method="POST")
        status: int | None = None
        error: str | None = None
        try:
            with _OPENER.open(request, timeout=self.timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (OSError, ValueError) as exc:  # refused, reset, timed out
            error = type(exc).__name__
        with self._cond:
            self._sent.append(SentRequest("POST", self.target_url, headers, body, status, error))
        return status is not None and 200 <= status < 300


def signed_headers(secret: str, url: str, body: bytes, timestamp: str) -> dict[str, str]:
    """The headers HubSpot sends with a webhook POST: the v3 signature and, for older receivers, v1."""
    from hubspot.utils.signature import Signature  # the client's own signer; a heavy package, loaded late

    text = body.decode()
    v3: str = Signature.get_signature(secret, text, "v3", signed_uri(url), "POST", timestamp)
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": v3,
        "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature": hashlib.sha256((secret + text).encode()).hexdigest(),
        "X-HubSpot-Signature-Version": "v1",
    }
