"""What the HubSpot source knows of each synced object, and HubSpot's dates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from connector.config import ObjectConfig
from connector.sources.hubspot_activity import EventRules

OWNER_PROPERTY = "hubspot_owner_id"
LIFECYCLE = "lifecyclestage"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

Json = dict[str, Any]


@lru_cache(maxsize=65_536)
def to_ms(value: str) -> int:
    """Epoch milliseconds of a HubSpot date: ISO 8601 ("...T09:30:00.000Z") or epoch milliseconds."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    return (datetime.fromisoformat(text) - _EPOCH) // _MS


def at_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def ms_of(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def millis(span: timedelta) -> int:
    return span // _MS


@dataclass(frozen=True)
class Stream:
    """One synced object type, declared as a Singer tap declares a stream: its name (the HubSpot
    object type), key, replication key, and the properties read with each record."""

    name: str
    status_field: str
    owner_field: str
    fields: tuple[str, ...]
    replication_key: str
    clear_before_backwards: bool  # only ever true for lifecyclestage: no other property needs it
    events: EventRules
    key: str = "hs_object_id"

    @classmethod
    def of(cls, source: str, name: str, settings: ObjectConfig) -> Stream:
        activity = settings.activity
        rules = EventRules.parse(activity.types if activity else {}, f"sources.{source}.objects.{name}.activity.types")
        return cls(
            name=name,
            status_field=settings.status_field,
            owner_field=settings.owner_field or OWNER_PROPERTY,
            fields=settings.fields,
            replication_key=modified_property(name),
            clear_before_backwards=settings.clear_before_backwards and settings.status_field == LIFECYCLE,
            events=rules,
        )

    @property
    def properties(self) -> list[str]:
        return list(dict.fromkeys((self.status_field, self.owner_field, *self.fields, self.replication_key)))


def modified_property(object_type: str) -> str:
    return "lastmodifieddate" if object_type in ("contacts", "contact", "0-1") else "hs_lastmodifieddate"
