"""Durations (`90s`, `15m`, `14d`) and percentages (`50%`) as they are written in YAML."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
DURATION_PATTERN = r"^\s*\d+\s*[smhdw]\s*$"


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"bad duration {value!r}: write a number and a unit, such as 90s, 15m, 2h, 14d or 1w")
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"bad duration {value!r}: write a number and a unit, such as 90s, 15m, 2h, 14d or 1w")
    amount = int(match.group(1))
    if amount == 0:
        raise ValueError(f"bad duration {value!r}: must be more than zero")
    return timedelta(seconds=amount * _UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_percent(value: Any) -> float:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if match:
            number = float(match.group(1))
            if 0 < number <= 100:
                return number / 100
    raise ValueError(f"bad percentage {value!r}: write a share such as 50% (more than 0%, at most 100%)")


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "15m", "14d"]}),
]

Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(lambda v: f"{v * 100:g}%", return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?%$", "examples": ["50%"]}),
]
