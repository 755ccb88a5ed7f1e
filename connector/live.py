"""Checks against the live CRM: the field exists, is a picklist, and every active value is mapped.

Also writes a starting mapping file from a live picklist (`connector mapping init`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from connector.config import SyncedObject
from connector.sources.base import FieldInfo, PicklistValue, Source
from connector.sources.errors import CrmError


@dataclass(frozen=True)
class LiveFinding:
    synced: SyncedObject
    message: str
    error: bool = True

    def to_json(self) -> dict[str, object]:
        """The shape of a config problem in `validate --json`; the key names the CRM field checked."""
        synced = self.synced
        return {
            "file": str(synced.mapping.file),
            "line": None,
            "key": f"{synced.source}.{synced.name}.{synced.settings.status_field}",
            "message": self.message,
            "severity": "error" if self.error else "warning",
        }

    def __str__(self) -> str:
        where = (
            f"{self.synced.mapping.file}: {self.synced.source} {self.synced.name}.{self.synced.settings.status_field}"
        )
        return f"{where}: {'' if self.error else 'warning: '}{self.message}"


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
        findings = check_object(sources[synced.source], synced)
        if collect is not None:
            collect.extend(findings)
        for finding in findings:
            echo(str(finding))
            failed = failed or finding.error
        if not any(f.error for f in findings):
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
