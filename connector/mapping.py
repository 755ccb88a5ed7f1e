"""Mapping files: ordered stages, the one-to-one status<->stage table, triggers and overrides."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from connector.durations import Duration
from connector.errors import Problem
from connector.yamlfile import YamlDocument, load_yaml, report_validation_error, suggest

ACTIVITY_EVENTS = (
    "email_sent",
    "email_delivered",
    "email_opened",
    "email_replied",
    "email_bounced",
    "meeting_booked",
    "call_logged",
    "form_submitted",
    "unsubscribed",
)
INACTIVE = "inactive"
_CUSTOM_EVENT = re.compile(r"^custom:[A-Za-z0-9_.-]+$")


def is_activity_event(name: str) -> bool:
    return name in ACTIVITY_EVENTS or bool(_CUSTOM_EVENT.match(name))


class Category(StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    NOT_SUCCEEDED = "not_succeeded"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class AssignRule(_Model):
    """Owner assignment on entering a stage: the first rule whose `when` matches the record wins."""

    when: dict[StrictStr, StrictStr | tuple[StrictStr, ...]] = Field(default_factory=dict)
    owner: StrictStr

    def matches(self, fields: dict[str, str | None]) -> bool:
        for name, expected in self.when.items():
            actual = fields.get(name)
            allowed = (expected,) if isinstance(expected, str) else expected
            if actual not in allowed:
                return False
        return True


class Stage(_Model):
    name: StrictStr
    category: Category
    sticky: StrictBool = False
    remind_after: Duration | None = None
    owner: StrictStr | None = None
    assign: tuple[AssignRule, ...] = ()


class _TriggerBase(_Model):
    name: StrictStr
    from_stages: tuple[StrictStr, ...] | None = Field(default=None, alias="from")
    from_category: tuple[Category, ...] | None = None
    to: StrictStr
    reactivate: StrictBool = False

    def applies_from(self, stage: str, category: Category) -> bool:
        if self.from_stages is not None and stage not in self.from_stages:
            return False
        return self.from_category is None or category in self.from_category


class ActivityTrigger(_TriggerBase):
    on: StrictStr

    @field_validator("on")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if not is_activity_event(value):
            hint = suggest(value, (*ACTIVITY_EVENTS, INACTIVE))
            events = ", ".join(ACTIVITY_EVENTS)
            raise ValueError(f"unknown event '{value}'{hint}; events: {events}, inactive, custom:NAME")
        return value


class InactiveTrigger(_TriggerBase):
    on: Literal["inactive"]
    after: Duration


Scalar = StrictStr | StrictInt | StrictFloat | StrictBool
Bound = StrictInt | StrictFloat | StrictStr  # a number, or an ISO date / date-time as text
OPERATORS = ("equals", "in", "gte", "gt", "lte", "lt", "is_set", "is_not_set")
ORDERING = frozenset({"gte", "gt", "lte", "lt"})


class Condition(_Model):
    """A condition on one field of the record as read from the CRM: exactly one operator."""

    # For editors: `field` and one operator.
    model_config = ConfigDict(json_schema_extra={"minProperties": 2, "maxProperties": 2})
    field: StrictStr = Field(min_length=1, max_length=255)
    equals: Scalar | None = None
    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in", min_length=1, max_length=1000)
    gte: Bound | None = None
    gt: Bound | None = None
    lte: Bound | None = None
    lt: Bound | None = None
    is_set: Literal[True] | None = None
    is_not_set: Literal[True] | None = None

    @field_validator("equals", mode="before")
    @classmethod
    def _one_value(cls, value: Any) -> Any:
        if isinstance(value, list | dict):
            raise ValueError("'equals' takes one value (text, a number, true or false); for several, use 'in'")
        return value

    @field_validator("is_set", "is_not_set", mode="before")
    @classmethod
    def _only_true(cls, value: Any) -> Any:
        if value is not True:
            raise ValueError("takes 'true' ('is_set: true' or 'is_not_set: true')")
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in OPERATORS if self._raw(name) is not None]
        if len(given) != 1:
            found = f"found {', '.join(given)}" if given else "found none"
            raise ValueError(f"a condition takes exactly one operator of {', '.join(OPERATORS)}; {found}")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError(f"'{self.operator}' needs a finite number")
        if self.operator in ORDERING and isinstance(self.value, str) and parse_bound(self.value) is None:
            raise ValueError(
                f"'{self.operator}' compares with a number (50) or an ISO date or date-time (2025-01-31, "
                f"2025-01-31T12:00:00Z); got text"
            )
        return self

    def _raw(self, name: str) -> Any:
        return getattr(self, "in_" if name == "in" else name)

    @property
    def operator(self) -> str:
        return next(name for name in OPERATORS if self._raw(name) is not None)

    @property
    def value(self) -> Any:
        return self._raw(self.operator)

    def check(self) -> Check:
        """The condition as plain values, its threshold parsed: what is evaluated for every record read."""
        operator, value = self.operator, self.value
        bound: Decimal | datetime | None = None
        if operator in ORDERING:
            bound = parse_bound(value) if isinstance(value, str) else Decimal(str(value))
        return Check(self.field, operator, value, bound)

    def __str__(self) -> str:
        value = self.value
        if self.operator in ("is_set", "is_not_set"):
            return f"{self.field} {self.operator}"
        shown = "[" + ", ".join(str(v) for v in value) + "]" if isinstance(value, tuple) else str(value)
        return f"{self.field} {self.operator} {shown}"


@dataclass(frozen=True, slots=True)
class Check:
    field: str
    operator: str
    value: Any  # the condition's value (a tuple for `in`)
    bound: Decimal | datetime | None  # gte/gt/lte/lt: the number or the instant compared with


def parse_bound(text: str) -> datetime | None:
    """An ISO date (midnight UTC) or date-time (UTC when it names no offset), else None."""
    text = text.strip()
    if len(text) > 40:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class CriteriaTrigger(_TriggerBase):
    """Fires when the record's fields, as read, come to satisfy `on` (not on every read while they do)."""

    on: Condition


def _trigger_kind(value: Any) -> str:
    on = value.get("on") if isinstance(value, dict) else getattr(value, "on", None)
    if isinstance(on, dict | Condition):
        return "criteria"
    return "inactive" if on == INACTIVE else "activity"


Trigger = Annotated[
    Annotated[InactiveTrigger, Tag("inactive")]
    | Annotated[ActivityTrigger, Tag("activity")]
    | Annotated[CriteriaTrigger, Tag("criteria")],
    Discriminator(_trigger_kind),
]
AnyTrigger = ActivityTrigger | InactiveTrigger | CriteriaTrigger


class Overrides(_Model):
    forward_only: StrictBool = True


class MappingFile(_Model):
    """The mapping file as written."""

    stages: tuple[Stage, ...] = Field(min_length=1)
    statuses: dict[StrictStr, StrictStr]
    triggers: tuple[Trigger, ...] = ()
    overrides: Overrides = Overrides()
    # Rule 4: the first sync is a baseline; `true` starts existing records' clocks from the CRM's dates.
    enroll_existing: StrictBool = False


@dataclass(frozen=True)
class StageMapping:
    """A validated mapping with the lookups the rules need."""

    file: Path
    stages: tuple[Stage, ...]
    triggers: tuple[AnyTrigger, ...]
    forward_only: bool
    enroll_existing: bool
    _stage_by_name: MappingProxyType[str, Stage]
    _index: MappingProxyType[str, int]
    _stage_by_status: MappingProxyType[str, str]
    _status_by_stage: MappingProxyType[str, str]

    @classmethod
    def build(cls, file: Path, model: MappingFile) -> StageMapping:
        return cls(
            file=file,
            stages=model.stages,
            triggers=model.triggers,
            forward_only=model.overrides.forward_only,
            enroll_existing=model.enroll_existing,
            _stage_by_name=MappingProxyType({s.name: s for s in model.stages}),
            _index=MappingProxyType({s.name: i for i, s in enumerate(model.stages)}),
            _stage_by_status=MappingProxyType(dict(model.statuses)),
            _status_by_stage=MappingProxyType({stage: status for status, stage in model.statuses.items()}),
        )

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def statuses(self) -> tuple[str, ...]:
        return tuple(self._stage_by_status)

    def has_stage(self, name: str) -> bool:
        return name in self._stage_by_name

    def stage(self, name: str) -> Stage:
        return self._stage_by_name[name]

    def index(self, name: str) -> int:
        return self._index[name]

    def category(self, name: str) -> Category:
        return self._stage_by_name[name].category

    def stage_for_status(self, status: str) -> str | None:
        return self._stage_by_status.get(status)

    def status_for_stage(self, stage: str) -> str:
        return self._status_by_stage[stage]

    def activity_triggers(self, event: str) -> Iterator[AnyTrigger]:
        return (t for t in self.triggers if not isinstance(t, CriteriaTrigger) and t.on == event)

    @cached_property
    def criteria(self) -> tuple[CriteriaTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, CriteriaTrigger))

    @cached_property  # asked for every record of every page: the conditions as plain values, once
    def criteria_checks(self) -> tuple[tuple[CriteriaTrigger, Check], ...]:
        return tuple((t, t.on.check()) for t in self.criteria)

    @property
    def criteria_fields(self) -> tuple[str, ...]:
        """The fields the criteria triggers read: read with each record whatever `fields` lists."""
        return tuple(dict.fromkeys(t.on.field for t in self.criteria))


def read_mapping(file: Path) -> tuple[StageMapping | None, list[Problem]]:
    """Parse and check one mapping file; every problem found is returned, none raised."""
    doc = load_yaml(file)
    if doc.problems and doc.data is None:
        return None, doc.problems
    if not isinstance(doc.data, dict):
        doc.problem((), "a mapping file must be a mapping with stages, statuses, triggers and overrides")
        return None, doc.problems
    model: MappingFile | None = None
    try:
        model = MappingFile.model_validate(doc.data)
    except ValidationError as exc:
        report_validation_error(doc, exc, MappingFile)
    # The cross-reference checks read the raw data, so they run even where the models failed.
    _check(doc)
    if model is None or any(not p.warning for p in doc.problems):
        return None, doc.problems
    return StageMapping.build(file, model), doc.problems


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _check(doc: YamlDocument) -> None:
    data = doc.data
    stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    names = [s["name"] for s in stages if isinstance(s, dict) and isinstance(s.get("name"), str)]
    statuses = data.get("statuses")
    if names and isinstance(statuses, dict):
        _check_table(doc, stages, {k: v for k, v in statuses.items() if isinstance(v, str)})
    triggers = data.get("triggers") if isinstance(data.get("triggers"), list) else []
    known = set(names)
    seen_triggers: dict[str, int] = {}
    for index, trigger in enumerate(triggers):
        if not isinstance(trigger, dict):
            continue
        path: tuple[str | int, ...] = ("triggers", index)
        label = f"trigger '{trigger.get('name', index)}'"
        for key in ("to", "from"):
            for stage in _names(trigger.get(key)):
                if names and stage not in known:
                    doc.problem((*path, key), f"{label}: unknown stage '{stage}'{suggest(stage, names)}")
        if "from" in trigger and "from_category" in trigger:
            doc.problem(path, f"{label}: give either 'from' or 'from_category', not both")
        name = trigger.get("name")
        if isinstance(name, str):
            if name in seen_triggers:
                doc.problem((*path, "name"), f"duplicate trigger name '{name}' (also triggers[{seen_triggers[name]}])")
            seen_triggers.setdefault(name, index)


def _check_table(doc: YamlDocument, stages: list[Any], statuses: dict[str, str]) -> None:
    seen: dict[str, int] = {}
    folded: dict[str, str] = {}
    for index, stage in enumerate(stages):
        name = stage.get("name") if isinstance(stage, dict) else None
        if not isinstance(name, str):
            continue
        path = ("stages", index, "name")
        if name in seen:
            doc.problem(path, f"duplicate stage '{name}' (also stages[{seen[name]}])")
            continue
        seen[name] = index
        if name.lower() in folded:
            doc.problem(path, f"stages '{folded[name.lower()]}' and '{name}' differ only in case", warning=True)
        folded[name.lower()] = name
    names = list(seen)
    statuses_of: dict[str, list[str]] = {}
    folded_status: dict[str, str] = {}
    for status, stage in statuses.items():
        status_path = ("statuses", status)
        if stage not in seen:
            doc.problem(status_path, f"status '{status}' names unknown stage '{stage}'{suggest(stage, names)}")
        else:
            statuses_of.setdefault(stage, []).append(status)
        if status.lower() in folded_status:
            doc.problem(
                status_path, f"statuses '{folded_status[status.lower()]}' and '{status}' differ only in case",
                warning=True,
            )
        folded_status[status.lower()] = status
    for stage, mapped in statuses_of.items():
        if len(mapped) > 1:
            listed = ", ".join(f"'{s}'" for s in mapped)
            doc.problem(
                ("statuses", mapped[1]),
                f"stage '{stage}' has {len(mapped)} statuses ({listed}); each stage needs exactly one",
            )
    for stage, index in seen.items():
        if stage not in statuses_of:
            message = f"stage '{stage}' has no status in 'statuses'; each stage needs exactly one"
            doc.problem(("stages", index, "name"), message)
