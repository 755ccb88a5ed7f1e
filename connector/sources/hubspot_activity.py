"""Which HubSpot engagements are which activity events.

Defaults, first match wins within a kind:

    emails:hs_email_status=BOUNCED          email_bounced
    emails:hs_email_direction=INCOMING_EMAIL email_replied
    emails:hs_email_direction=EMAIL         email_sent
    meetings                                meeting_booked
    calls                                   call_logged

`activity.types` in config.yaml adds rules or overrides these. A key is an engagement object type
(`emails`, `meetings`, `calls`, ...), optionally with one `property=value` condition; the value is
an event name from the mapping vocabulary (`custom:NAME` included) or `none` to ignore matches:

    activity:
      types:
        "emails:hs_email_direction=FORWARDED_EMAIL": custom:forwarded
        "calls:hs_call_status=NO_ANSWER": none
        meetings: custom:meeting

Configured rules come before the defaults, those with a condition before those without; a kind with
a configured rule without condition takes no default rule of that kind at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from connector.errors import ConfigError, Problem
from connector.mapping import is_activity_event

IGNORE = "none"
_KEY = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<prop>[A-Za-z0-9_]+)=(?P<value>.*))?$")


@dataclass(frozen=True)
class EventRule:
    kind: str
    event: str | None  # None: matching engagements are ignored
    prop: str | None = None
    value: str | None = None

    def matches(self, kind: str, properties: Mapping[str, str | None]) -> bool:
        return kind == self.kind and (self.prop is None or properties.get(self.prop) == self.value)


DEFAULT_RULES = (
    EventRule("emails", "email_bounced", "hs_email_status", "BOUNCED"),
    EventRule("emails", "email_replied", "hs_email_direction", "INCOMING_EMAIL"),
    EventRule("emails", "email_sent", "hs_email_direction", "EMAIL"),
    EventRule("meetings", "meeting_booked"),
    EventRule("calls", "call_logged"),
)


@dataclass(frozen=True)
class EventRules:
    rules: tuple[EventRule, ...]

    @classmethod
    def parse(cls, types: Mapping[str, str], where: str) -> EventRules:
        """Rules from `activity.types`; every bad key or event is reported at once."""
        configured: list[EventRule] = []
        problems: list[Problem] = []
        for key, event in types.items():
            match = _KEY.match(key)
            if match is None:
                problems.append(Problem(where, None, f"{key!r} is not 'kind' or 'kind:property=value'"))
                continue
            if event != IGNORE and not is_activity_event(event):
                problems.append(Problem(where, None, f"{key!r}: unknown event {event!r} (an activity event or none)"))
                continue
            configured.append(
                EventRule(match["kind"], None if event == IGNORE else event, match["prop"], match["value"])
            )
        if problems:
            raise ConfigError(problems)
        configured.sort(key=lambda r: r.prop is None)  # stable: file order within each group
        replaced = {r.kind for r in configured if r.prop is None}
        return cls((*configured, *(r for r in DEFAULT_RULES if r.kind not in replaced)))

    @property
    def kinds(self) -> tuple[str, ...]:
        """Engagement types with at least one rule giving an event, in first-rule order."""
        return tuple(dict.fromkeys(r.kind for r in self.rules if r.event is not None))

    def properties(self, kind: str) -> list[str]:
        return sorted({r.prop for r in self.rules if r.kind == kind and r.prop is not None})

    def event(self, kind: str, properties: Mapping[str, str | None]) -> str | None:
        for rule in self.rules:
            if rule.matches(kind, properties):
                return rule.event
        return None
