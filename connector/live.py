"""Checks against the live CRM: the field exists, is a picklist, and every active value is mapped.

Also writes a starting mapping file from a live picklist (`connector mapping init`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from connector.config import SyncedObject
from connector.mapping import ORDERING
from connector.sources.base import FieldInfo, PicklistValue, Source
from connector.sources.errors import CrmError


@dataclass(frozen=True)
class LiveFinding:
    synced: SyncedObject
    message: str
    error: bool = True
    field: str | None = None  # the CRM field checked, when not the status field (a criteria field)

    @property
    def checked(self) -> str:
        return self.field or self.synced.settings.status_field

    def to_json(self) -> dict[str, object]:
        """The shape of a config problem in `validate --json`; the key names the CRM field checked."""
        synced = self.synced
        return {
            "file": str(synced.mapping.file),
            "line": None,
            "key": f"{synced.source}.{synced.name}.{self.checked}",
            "message": self.message,
            "severity": "error" if self.error else "warning",
        }

    def __str__(self) -> str:
        where = f"{self.synced.mapping.file}: {self.synced.source} {self.synced.name}.{self.checked}"
        return f"{where}: {'' if self.error else 'warning: '}{self.message}"


# The CRM field types each kind of comparison admits (Salesforce describe types; HubSpot property types).
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent", "number"})
DATE_TYPES = frozenset({"date", "datetime"})


def check_criteria(source: Source, synced: SyncedObject) -> list[LiveFinding]:
    """Each field a criteria trigger reads exists on the object, and its type admits the operator."""
    findings: list[LiveFinding] = []
    described: dict[str, FieldInfo | None] = {}
    for trigger in synced.mapping.criteria:
        condition = trigger.on
        name = condition.field
        if name not in described:
            try:
                described[name] = source.describe_field(synced.name, name)
            except CrmError as exc:
                described[name] = None
                findings.append(LiveFinding(synced, f"cannot describe the field: {exc.describe()}", field=name))
        info = described[name]
        if info is None:
            continue
        said = f"criteria trigger '{trigger.name}'"
        if not info.exists:
            message = f"{said} reads {name}, which does not exist on {synced.name}"
            findings.append(LiveFinding(synced, message, field=name))
            continue
        kind = (info.type or "").lower()
        operator = condition.operator
        if operator in ORDERING and kind:
            wanted = DATE_TYPES if isinstance(condition.value, str) else NUMBER_TYPES
            if kind not in wanted:
                what = "a date or date-time" if wanted is DATE_TYPES else "a number"
                message = f"{said}: '{operator}' compares {name} with {what}, but it is a {kind} field"
                findings.append(LiveFinding(synced, message, field=name))
        if operator in ("equals", "in") and info.is_picklist and info.values:
            options = {v.value.casefold() for v in info.values} | {v.label.casefold() for v in info.values}
            values = condition.value if operator == "in" else (condition.value,)
            missing = [str(v) for v in values if str(v).casefold() not in options]
            if missing:
                listed = ", ".join(repr(v) for v in missing)
                findings.append(
                    LiveFinding(
                        synced, f"{said}: {listed} is not a value of the picklist {name}; it never matches",
                        error=False, field=name,
                    )
                )
    return findings


def check_object(source: Source, synced: SyncedObject) -> list[LiveFinding]:
    field = synced.settings.status_field
    try:
        info = source.describe_field(synced.name)
    except CrmError as exc:
        return [LiveFinding(synced, f"cannot describe the field: {exc.describe()}")]
    if not info.exists:
        return [LiveFinding(synced, f"the field {field} does not exist on {synced.name}")]
    if not info.is_picklist:
        return [LiveFinding(synced, f"the field {field} is a {info.type or 'non-picklist'} field, not a picklist")]
    findings = []
    mapped = set(synced.mapping.statuses)
    active = [v for v in info.values if v.active]
    unmapped = [v.value for v in active if v.value not in mapped]
    if unmapped:
        listed = ", ".join(repr(v) for v in unmapped)
        findings.append(
            LiveFinding(
                synced,
                f"{len(unmapped)} active picklist value(s) not in the mapping: {listed}; "
                "records with them would be quarantined",
            )
        )
    known = {v.value for v in info.values}
    for status in synced.mapping.statuses:
        if status not in known:
            findings.append(
                LiveFinding(
                    synced,
                    f"the mapping's status {status!r} is not a picklist value in the CRM; writing it back would fail",
                )
            )
        elif status not in {v.value for v in active}:
            findings.append(LiveFinding(synced, f"the mapping's status {status!r} is inactive in the CRM", error=False))
    return findings


def validate_live(
    sources: dict[str, Source],
    objects: list[SyncedObject],
    echo: Callable[[str], None],
    collect: list[LiveFinding] | None = None,
) -> bool:
    """Print each finding (and add it to `collect`); True when an error was found."""
    failed = False
    for synced in objects:
        status = check_object(sources[synced.source], synced)
        findings = status + check_criteria(sources[synced.source], synced)
        if collect is not None:
            collect.extend(findings)
        for finding in findings:
            echo(str(finding))
            failed = failed or finding.error
        if not any(f.error for f in status):
            echo(f"{synced.source} {synced.name}.{synced.settings.status_field}: every active value is mapped")
    return failed


_NOT_SUCCEEDED = re.compile(
    r"not converted|unqualified|disqualified|lost|bad timing|churn|dead|junk|unresponsive", re.IGNORECASE
)


def _category(value: PicklistValue) -> str:
    if value.converted:
        return "succeeded"
    if _NOT_SUCCEEDED.search(value.label) or _NOT_SUCCEEDED.search(value.value):
        return "not_succeeded"
    if re.search(r"customer|won|converted|closed - converted", value.label, re.IGNORECASE):
        return "succeeded"
    return "in_progress"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def initial_mapping(info: FieldInfo, source: str, obj: str, field: str) -> str:
    """A starting mapping: the active values in the CRM's order, one stage each, categories guessed."""
    values = sorted((v for v in info.values if v.active), key=lambda v: v.order)
    names: dict[str, str] = {}
    for value in values:
        name = value.label.strip() or value.value
        while name in names.values():
            name += " (2)"
        names[value.value] = name
    lines = [
        f"# Starting mapping for {source} {obj}.{field}, written by `connector mapping init`.",
        "# Review the categories (guessed from the labels), then add triggers.",
        "stages:                         # funnel order is list order",
    ]
    lines += [f"  - {{name: {_quote(names[v.value])}, category: {_category(v)}}}" for v in values]
    lines.append("statuses:                       # CRM value -> stage; one-to-one")
    lines += [f"  {_quote(v.value)}: {_quote(names[v.value])}" for v in values]
    lines += [
        "triggers: []                    # e.g. - {name: replied, on: email_replied, from: [...], to: ...}",
        "overrides:",
        "  forward_only: true",
        "",
    ]
    return "\n".join(lines)
