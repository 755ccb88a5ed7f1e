"""The body of a HubSpot webhook request: a JSON array of up to 100 events, checked and typed.

Each event is one of HubSpot's subscription types, in the legacy form (`contact.propertyChange`,
`company.creation`, `deal.merge`, ...) or the generic one (`object.propertyChange` with an
`objectTypeId` such as "0-1"). The shapes follow HubSpot's Webhooks API guide and its changelog for merge
events (`primaryObjectId`, `mergedObjectIds`, `newObjectId`). A value of the wrong type is refused by
naming the event and the key, never by quoting what was sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_EVENTS = 100  # HubSpot sends at most 100 events a request
# The actions that name a record whose status may have moved; the shape of other events (association
# changes, conversations, types HubSpot adds later) is not checked beyond the common keys, so that one
# of them never makes the whole batch refused, and retried by HubSpot for a day.
RECORD_ACTIONS = frozenset({"propertyChange", "creation", "restore", "deletion", "privacyDeletion", "merge"})
_MAX_ID_DIGITS = 20
_MAX_TEXT = 512  # subscription types and property names are short; anything longer is not HubSpot's


class MalformedBody(ValueError):
    """The body is not HubSpot's: a short reason that quotes nothing from it."""


@dataclass(frozen=True)
class Event:
    subscription_type: str  # e.g. "contact.propertyChange", "object.merge"
    object_id: str
    portal_id: str
    object_type_id: str | None = None  # the generic form's "0-1", "0-2", ...
    property_name: str | None = None
    related_ids: tuple[str, ...] = ()  # a merge's primary, merged-away and new ids

    @property
    def object_type(self) -> str:
        """The singular HubSpot type ("contact") or, for the generic form, the objectTypeId."""
        kind = self.subscription_type.partition(".")[0]
        return self.object_type_id if kind == "object" and self.object_type_id else kind

    @property
    def action(self) -> str:
        return self.subscription_type.partition(".")[2]


def parse_events(body: bytes) -> list[Event]:
    """The events of a request body; raises `MalformedBody`."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deep enough to exhaust the stack
        raise MalformedBody("the body is not JSON") from None
    if not isinstance(raw, list):
        raise MalformedBody("the body is not a JSON array of events")
    if not raw:
        raise MalformedBody("the body holds no events")
    if len(raw) > MAX_EVENTS:
        raise MalformedBody(f"the body holds {len(raw)} events; HubSpot sends at most {MAX_EVENTS}")
    return [_event(n, item) for n, item in enumerate(raw, start=1)]


def _event(n: int, item: Any) -> Event:
    if not isinstance(item, dict):
        raise MalformedBody(f"event {n} is not a JSON object")
    # Requests carry `subscriptionType`; the Webhooks API guide's example payload names it `eventType`.
    subscription_type = _text(n, item, "subscriptionType" if "subscriptionType" in item else "eventType")
    _identifier(n, item, "eventId")
    _integer(n, item, "occurredAt")
    if "attemptNumber" in item:
        _integer(n, item, "attemptNumber")
    portal_id = _identifier(n, item, "portalId")
    action = subscription_type.partition(".")[2]
    if action not in RECORD_ACTIONS:
        return Event(subscription_type=subscription_type, object_id="", portal_id=portal_id)
    object_type_id = _text(n, item, "objectTypeId") if subscription_type.startswith("object.") else None
    property_name = _text(n, item, "propertyName") if action == "propertyChange" else None
    related: tuple[str, ...] = ()
    if action == "merge":
        merged = item.get("mergedObjectIds")
        if not isinstance(merged, list) or len(merged) > MAX_EVENTS:
            raise MalformedBody(f"event {n}: mergedObjectIds must be a list of ids")
        ids = [_identifier(n, item, "primaryObjectId")]
        ids += [_id_value(n, "mergedObjectIds", value) for value in merged]
        if item.get("newObjectId") is not None:
            ids.append(_identifier(n, item, "newObjectId"))
        related = tuple(ids)
    # A merge names its survivor as primaryObjectId; objectId is the same record when present.
    object_id = related[0] if related and "objectId" not in item else _identifier(n, item, "objectId")
    return Event(
        subscription_type=subscription_type,
        object_id=object_id,
        portal_id=portal_id,
        object_type_id=object_type_id,
        property_name=property_name,
        related_ids=related,
    )


def _text(n: int, item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise MalformedBody(f"event {n}: {key} must be a non-empty string")
    return value


def _integer(n: int, item: dict[str, Any], key: str) -> int:
    value = item.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedBody(f"event {n}: {key} must be a whole number")
    return value


def _identifier(n: int, item: dict[str, Any], key: str) -> str:
    if key not in item:
        raise MalformedBody(f"event {n} has no {key}")
    return _id_value(n, key, item[key])


def _id_value(n: int, key: str, value: Any) -> str:
    # HubSpot sends ids as JSON numbers; a decimal string is accepted too (the generic form's ids are
    # documented as strings in places), anything else is not an id.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        text = str(value)
    elif isinstance(value, str) and value.isdecimal() and value.isascii():
        text = value.lstrip("0") or "0"
    else:
        raise MalformedBody(f"event {n}: {key} must be a numeric id")
    if len(text) > _MAX_ID_DIGITS:
        raise MalformedBody(f"event {n}: {key} must be a numeric id")
    return text
