"""A HubSpot source's webhook endpoint: checks the v3 signature and names the records that changed.

What is refused, in this order, and why:
  * not a POST: 405 METHOD (HubSpot only POSTs events);
  * a body over `MAX_BODY`: 413 TOO_LARGE, before any work is spent on it;
  * no `X-HubSpot-Signature-v3` / `X-HubSpot-Request-Timestamp`, or a signature that does not match:
    401 SIGNATURE. The signature is checked before the timestamp, so SIGNATURE counts forgeries and
    REPLAY counts genuine requests sent again;
  * a timestamp older than `max_age` (HubSpot's guide: 5 minutes), or more than `FUTURE_SKEW` ahead of
    our clock: 401 REPLAY;
  * a body that is not HubSpot's array of events: 400 MALFORMED.

What is accepted and ignored (200, no notice): events of objects this source does not sync, changes of
properties the connector does not read, subscription types that do not move a record (association
changes, conversations) and events of another HubSpot account than `portal_id`. A public app's webhooks
carry every installing account's events to one target URL; they are genuine, and refusing them would only
make HubSpot retry them for a day.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from urllib.parse import urlsplit

from connector.config import HubSpotSource, HubSpotWebhooks, ObjectConfig
from connector.webhooks.base import (
    MAX_BODY,
    Notice,
    NoticeKind,
    RefusalReason,
    Refused,
    WebhookReply,
    WebhookRequest,
)
from connector.webhooks.hubspot_events import Event, MalformedBody, parse_events
from connector.webhooks.hubspot_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, matches_v3

log = logging.getLogger(__name__)

# HubSpot's clock may run a little ahead of ours; a timestamp further ahead is not HubSpot's now.
FUTURE_SKEW = timedelta(minutes=1)
_MAX_TIMESTAMP_DIGITS = 16

# Config object names (the API's type names) -> the singular type of legacy subscription types, and the
# objectTypeId of the generic `object.*` form.
_TYPES = {
    "contacts": ("contact", "0-1"),
    "companies": ("company", "0-2"),
    "deals": ("deal", "0-3"),
    "tickets": ("ticket", "0-5"),
}
_ALIASES = {alias: name for name, (singular, type_id) in _TYPES.items() for alias in (name, singular, type_id)}

_KINDS = {
    "propertyChange": NoticeKind.CHANGE,
    "creation": NoticeKind.CREATION,
    "restore": NoticeKind.CREATION,  # an archived record is back: read it as a new one
    "deletion": NoticeKind.DELETION,
    "privacyDeletion": NoticeKind.DELETION,  # GDPR delete; HubSpot sends a `deletion` as well
    "merge": NoticeKind.MERGE,
}

_ACCEPTED = WebhookReply(200, "text/plain; charset=utf-8", b"")


class HubSpotReceiver:
    """`/webhooks/<source>` for one HubSpot source (see the module's docstring for what it refuses)."""

    def __init__(
        self,
        source: str,
        settings: HubSpotWebhooks,
        properties: Mapping[str, frozenset[str]],
        *,
        portal_id: int | str | None = None,
    ) -> None:
        """`properties`: each synced object's config name -> the properties whose changes matter (the
        status field, owner field, `fields`, what the rules read). Objects missing from it are not synced."""
        self.source = source
        self._secret = settings.app_secret.get_secret_value()
        self._max_age = settings.max_age
        self._url = settings.url
        self._properties = dict(properties)
        self._portal = None if portal_id is None else str(portal_id)
        # (legacy singular type or objectTypeId) -> config object name
        self._objects: dict[str, str] = {}
        for name in self._properties:
            canonical = _ALIASES.get(name.lower())
            keys = _TYPES[canonical] if canonical is not None else (name,)  # a custom object: "2-123"
            self._objects.update((key, name) for key in keys)

    @classmethod
    def from_config(
        cls, source: str, config: HubSpotSource, extra: Mapping[str, frozenset[str]] | None = None
    ) -> HubSpotReceiver:
        """The receiver for a configured source with webhooks; `extra` adds properties per object."""
        if config.webhooks is None:
            raise ValueError(f"source {source} has no webhooks configured")
        properties = interesting_properties(config.objects)
        for name, names in (extra or {}).items():
            properties[name] = properties.get(name, frozenset()) | names
        return cls(source, config.webhooks, properties, portal_id=config.portal_id)

    def receive(self, request: WebhookRequest) -> tuple[Sequence[Notice], WebhookReply]:
        if request.method.upper() != "POST":
            raise Refused(405, RefusalReason.METHOD, "HubSpot webhooks are POST requests")
        if len(request.body) > MAX_BODY:
            raise Refused(413, RefusalReason.TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        self._check_signature(request)
        try:
            events = parse_events(request.body)
        except MalformedBody as exc:
            raise Refused(400, RefusalReason.MALFORMED, str(exc)) from None
        return self._notices(events), _ACCEPTED

    # --- the signature ---------------------------------------------------------------------------
    def _check_signature(self, request: WebhookRequest) -> None:
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            missing = "X-HubSpot-Signature-v3" if not signature else "X-HubSpot-Request-Timestamp"
            raise Refused(401, RefusalReason.SIGNATURE, f"no {missing} header")
        timestamp = timestamp.strip()
        if not timestamp.isdecimal() or not timestamp.isascii() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
            raise Refused(401, RefusalReason.SIGNATURE, "X-HubSpot-Request-Timestamp is not a time in milliseconds")
        url = self._signed_url(request.url)
        if not matches_v3(self._secret, request.method, url, request.body, timestamp, signature):
            raise Refused(401, RefusalReason.SIGNATURE, "the X-HubSpot-Signature-v3 signature does not match")
        # In whole milliseconds, as HubSpot stamps: no float rounding, no overflow on a huge value.
        age_ms = round(request.received_at.timestamp() * 1000) - int(timestamp)
        if age_ms > self._max_age // timedelta(milliseconds=1):
            raise Refused(401, RefusalReason.REPLAY, f"the request is older than {_seconds(self._max_age)}")
        if -age_ms > FUTURE_SKEW // timedelta(milliseconds=1):
            raise Refused(401, RefusalReason.REPLAY, "the request's timestamp is in the future")

    def _signed_url(self, seen: str) -> str:
        """The URL HubSpot called: as seen, or, behind a proxy, the configured target URL with the query
        this server saw (HubSpot calls the registered URL as it is)."""
        if self._url is None:
            return _without_default_port(seen)
        if "?" in self._url:
            return self._url
        query = urlsplit(seen).query
        return f"{self._url}?{query}" if query else self._url

    # --- events to notices -----------------------------------------------------------------------
    def _notices(self, events: Sequence[Event]) -> list[Notice]:
        grouped: dict[tuple[str, NoticeKind], dict[str, None]] = {}
        for event in events:
            target = self._target(event)
            if target is not None:
                ids = grouped.setdefault(target, {})
                ids.update(dict.fromkeys((event.object_id, *event.related_ids)))
        return [Notice(object=name, record_ids=tuple(ids), kind=kind) for (name, kind), ids in grouped.items()]

    def _target(self, event: Event) -> tuple[str, NoticeKind] | None:
        """The (synced object, kind) an event is about, or None when it moves nothing we sync."""
        if self._portal is not None and event.portal_id != self._portal:
            log.debug("webhook event of another HubSpot account ignored (source %s)", self.source)
            return None
        kind = _KINDS.get(event.action)  # None: not a record action (see hubspot_events.RECORD_ACTIONS)
        name = self._objects.get(event.object_type)
        if kind is None or name is None:
            return None
        if kind is NoticeKind.CHANGE and event.property_name not in self._properties[name]:
            return None
        return name, kind


def _without_default_port(url: str) -> str:
    """`https://host:443/...` as `https://host/...`: a server may add the port HubSpot's registered URL
    leaves out. Only the authority changes; the path and query stay byte for byte as they came."""
    parts = urlsplit(url)
    default = {"https": ":443", "http": ":80"}.get(parts.scheme.lower())
    if default is None or not parts.netloc.endswith(default):
        return url
    head = f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}://{parts.netloc[: -len(default)]}{url[len(head):]}" if url.startswith(head) else url


def interesting_properties(objects: Mapping[str, ObjectConfig]) -> dict[str, frozenset[str]]:
    """Per object, the properties the connector reads: status field, owner field and `fields`."""
    return {
        name: frozenset({cfg.status_field, *cfg.fields, *((cfg.owner_field,) if cfg.owner_field else ())})
        for name, cfg in objects.items()
    }


def _seconds(age: timedelta) -> str:
    return f"{int(age.total_seconds())} s"
