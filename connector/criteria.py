"""Criteria conditions evaluated against a record's fields as read from the CRM. Pure: no I/O, no clock.

CRMs give one value several ways: Salesforce answers JSON numbers, booleans and ISO text; HubSpot
gives every property as a string (dates as ISO text or epoch milliseconds). So a value is compared
by what the condition asks for: numbers as numbers, dates and date-times as instants, `equals`/`in`
as text without regard to case (numbers equal as numbers: "50" equals 50.0). A value that cannot be
read as what the operator needs makes the condition false, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.mapping import Check, Condition, parse_bound

MAX_VALUE_CHARS = 1000  # a longer CRM value is not compared: it matches no condition
_SHOWN_CHARS = 40  # how much of a CRM value a history entry shows


def holds(condition: Condition | Check, fields: Mapping[str, Any]) -> bool:
    """True when `fields` satisfy `condition`; a missing field reads as not set."""
    check = condition.check() if isinstance(condition, Condition) else condition
    actual = fields.get(check.field)
    operator, expected = check.operator, check.value
    if operator == "is_set":
        return _is_set(actual)
    if operator == "is_not_set":
        return not _is_set(actual)
    if not _is_set(actual) or (isinstance(actual, str) and len(actual) > MAX_VALUE_CHARS):
        return False
    if operator == "equals":
        return _equal(actual, expected)
    if operator == "in":
        return any(_equal(actual, option) for option in expected)
    return _ordered(operator, actual, check.bound)


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None  # True is not 1 to a person writing `gte: 1`
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= 64:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _instant(value: Any) -> datetime | None:
    if isinstance(value, str):
        text = value.strip()
        # HubSpot's date properties may come as epoch milliseconds.
        return _millis(int(text)) if text.isdigit() and 10 <= len(text) <= 15 else parse_bound(text)
    if isinstance(value, int) and not isinstance(value, bool):
        return _millis(value)
    return None


def _millis(value: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(value / 1000, UTC) if 10**9 <= value < 10**15 else None
    except (ValueError, OverflowError, OSError):  # past the year 9999
        return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().casefold()


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return _text(actual) == _text(expected)
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return left == right
    return _text(actual) == _text(expected)


def _ordered(operator: str, actual: Any, bound: Decimal | datetime | None) -> bool:
    left = _instant(actual) if isinstance(bound, datetime) else _number(actual)
    if left is None or bound is None:
        return False
    return _compare(operator, left, bound)


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "gte":
        return bool(left >= right)
    if operator == "gt":
        return bool(left > right)
    if operator == "lte":
        return bool(left <= right)
    return bool(left < right)


def shown(value: Any) -> str:
    """A CRM value as a history entry shows it: bounded, one line, no control characters."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "(not set)"
    text = _text(value) if isinstance(value, bool) else str(value)
    text = "".join(c if c.isprintable() else " " for c in text[: _SHOWN_CHARS + 1])
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def describe(condition: Condition, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    """What changed and the condition it now meets: `HubSpotScore 42 -> 55 (gte 50)`."""
    old = shown(before.get(condition.field)) if before is not None else "(first read)"
    rule = str(condition)[len(condition.field) + 1 :]
    return f"{condition.field} {old} -> {shown(after.get(condition.field))} ({rule})"
