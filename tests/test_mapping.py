"""Mapping files: what RevOps writes, what the connector reads from it, and every message for a broken one.

Each broken case lists the exact lines a user sees (`file:line: message`), in the order `validate`
prints them (by line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from connector.errors import Problem
from connector.mapping import (
    ACTIVITY_EVENTS,
    ActivityTrigger,
    Category,
    InactiveTrigger,
    StageMapping,
    read_mapping,
)
from connector.yamlfile import load_yaml

REPO = Path(__file__).resolve().parents[1]
MAPPING_FILES = sorted((REPO / "mappings").glob("*.yaml"))

# The mapping example from DESIGN.md ("A mapping file"), as written there.
DESIGN_MAPPING = """\
stages:                         # funnel order is list order
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress, remind_after: 10d}
  - {name: Meeting Set,  category: succeeded, sticky: true}
  - {name: Unresponsive, category: not_succeeded}
statuses:                       # external status -> local stage; must be one-to-one
  Open - Not Contacted: New
  Working - Contacted: Working
  Closed - Converted: Meeting Set
  Closed - Not Converted: Unresponsive
triggers:                       # first match in file order wins
  - {name: replied,    on: email_replied, from: [New], to: Working}
  - {name: gone-quiet, on: inactive, after: 14d, from: [Working], to: Unresponsive}
  - {name: came-back,  on: form_submitted, from_category: [not_succeeded], to: Working, reactivate: true}
overrides:
  forward_only: true            # default true
"""

# A small valid mapping the broken cases are derived from; line numbers below refer to it.
BASE = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress, remind_after: 10d}
  - {name: Won, category: succeeded, sticky: true}
  - {name: Lost, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Converted: Won
  Dead: Lost
triggers:
  - {name: replied, on: email_replied, from: [New], to: Working}
  - {name: quiet, on: inactive, after: 14d, from: [Working], to: Lost}
  - {name: back, on: form_submitted, from_category: [not_succeeded], to: Working, reactivate: true}
overrides:
  forward_only: true
"""

EVENTS = ", ".join(ACTIVITY_EVENTS) + ", inactive, custom:NAME"
CATEGORIES = "'in_progress', 'succeeded' or 'not_succeeded'"
DURATION_HINT = "write a number and a unit, such as 90s, 15m, 2h, 14d or 1w"


def _replace(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def write(folder: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def shown(problems: list[Problem]) -> list[str]:
    """The lines `validate` prints: ordered by line, as ConfigError orders them."""
    return [str(p) for p in sorted(problems, key=lambda p: p.line or 0)]


def expand(lines: list[str], path: Path) -> list[str]:
    return [line.replace("{f}", str(path)) for line in lines]


MAPPING_CASES = [
    pytest.param(BASE, [], id="valid"),
    pytest.param(
        "stages:\n  - {name: New, category: in_progress\n  - {name: Working, category: in_progress}\n",
        ["{f}:3: YAML syntax error: while parsing a flow mapping expected ',' or '}', but got '{'"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        _replace("statuses:", "stauses:"),
        [
            "{f}:1: statuses: missing required key 'statuses'",
            "{f}:6: stauses: unknown key 'stauses' (did you mean 'statuses'?)",
        ],
        id="unknown-top-level-key-stauses",
    ),
    pytest.param(
        _replace("sticky: true}", "sticky: true, stiky: true}"),
        ["{f}:4: stages[2].stiky: unknown key 'stiky' (did you mean 'sticky'?)"],
        id="unknown-key-in-stage",
    ),
    pytest.param(
        _replace("from: [New], to: Working}", "form: [New], to: Working}"),
        ["{f}:12: triggers[0].form: unknown key 'form' (did you mean 'from'?)"],
        id="unknown-key-in-trigger",
    ),
    pytest.param(
        _replace("forward_only: true", "forward_only: true\n  backwards: false"),
        ["{f}:17: overrides.backwards: unknown key 'backwards'"],
        id="unknown-key-in-overrides",
    ),
    pytest.param(
        _replace("sticky: true}", "sticky: yes please}"),
        ["{f}:4: stages[2].sticky: 'yes please' is not true or false"],
        id="sticky-yes-please",
    ),
    pytest.param(
        _replace("sticky: true}", "sticky: yes}"),
        ["{f}:4: stages[2].sticky: 'yes' is not true or false"],
        id="sticky-yes-is-yaml-1.2-text",
    ),
    pytest.param(
        _replace("{name: Won, category: succeeded,", "{name: Won, category: won,"),
        [f"{{f}}:4: stages[2].category: 'won' is not one of {CATEGORIES}"],
        id="unknown-category-in-stage",
    ),
    pytest.param(
        _replace("from_category: [not_succeeded]", "from_category: [lost]"),
        [f"{{f}}:14: triggers[2].from_category[0]: 'lost' is not one of {CATEGORIES}"],
        id="unknown-category-in-from_category",
    ),
    pytest.param(
        _replace("  Dead: Lost\n", "  Dead: Lost\n  Open: New\n"),
        ["{f}:11: duplicate key 'Open' (first at line 7)"],
        id="duplicate-status-key",
    ),
    pytest.param(
        _replace("  Dead: Lost\n", "  Dead: Lost\n  Lost: Lost\n"),
        ["{f}:11: stage 'Lost' has 2 statuses ('Dead', 'Lost'); each stage needs exactly one"],
        id="stage-with-two-statuses",
    ),
    pytest.param(
        _replace("  Dead: Lost\n", ""),
        ["{f}:5: stage 'Lost' has no status in 'statuses'; each stage needs exactly one"],
        id="stage-with-no-status",
    ),
    pytest.param(
        _replace("  - {name: Lost, category: not_succeeded}\n",
                 "  - {name: Lost, category: not_succeeded}\n  - {name: Won, category: succeeded}\n"),
        ["{f}:6: duplicate stage 'Won' (also stages[2])"],
        id="duplicate-stage-name",
    ),
    pytest.param(
        _replace("  Contacted: Working\n", "  Contacted: Workng\n"),
        [
            "{f}:3: stage 'Working' has no status in 'statuses'; each stage needs exactly one",
            "{f}:8: status 'Contacted' names unknown stage 'Workng' (did you mean 'Working'?)",
        ],
        id="status-naming-unknown-stage",
    ),
    pytest.param(
        _replace(
            "  - {name: replied, on: email_replied, from: [New], to: Working}\n",
            "  - name: replied\n    on: email_replied\n    from: [New, Nw]\n    to: Wroking\n",
        ),
        [
            "{f}:14: trigger 'replied': unknown stage 'Nw' (did you mean 'New'?)",
            "{f}:15: trigger 'replied': unknown stage 'Wroking' (did you mean 'Working'?)",
        ],
        id="trigger-unknown-stage-in-from-and-to",
    ),
    pytest.param(
        _replace("on: email_replied,", "on: email_repled,"),
        [f"{{f}}:12: triggers[0].on: unknown event 'email_repled' (did you mean 'email_replied'?); events: {EVENTS}"],
        id="unknown-event",
    ),
    pytest.param(
        _replace("on: email_replied,", "on: true,"),
        ["{f}:12: triggers[0].on: True must be text"],
        id="event-must-be-text",
    ),
    pytest.param(
        _replace("from: [New], to: Working}", "from: [New], from_category: [in_progress], to: Working}"),
        ["{f}:12: trigger 'replied': give either 'from' or 'from_category', not both"],
        id="from-and-from_category",
    ),
    pytest.param(
        _replace("from: [New], to: Working}", "from: New, to: Working}"),
        ["{f}:12: triggers[0].from: must be a list"],
        id="from-must-be-a-list",
    ),
    pytest.param(
        _replace("on: inactive, after: 14d,", "on: inactive,"),
        ["{f}:13: triggers[1].after: missing required key 'after'"],
        id="inactive-without-after",
    ),
    pytest.param(
        _replace("after: 14d", "after: 10 days"),
        [f"{{f}}:13: triggers[1].after: bad duration '10 days': {DURATION_HINT}"],
        id="bad-duration-10-days",
    ),
    pytest.param(
        _replace("after: 14d", "after: 0d"),
        ["{f}:13: triggers[1].after: bad duration '0d': must be more than zero"],
        id="bad-duration-0d",
    ),
    pytest.param(
        _replace("after: 14d", "after: 14"),
        [f"{{f}}:13: triggers[1].after: bad duration 14: {DURATION_HINT}"],
        id="bad-duration-14",
    ),
    pytest.param(
        _replace("remind_after: 10d", "remind_after: 10 days"),
        [f"{{f}}:3: stages[1].remind_after: bad duration '10 days': {DURATION_HINT}"],
        id="bad-duration-in-stage",
    ),
    pytest.param(
        _replace("{name: quiet,", "{name: replied,"),
        ["{f}:13: duplicate trigger name 'replied' (also triggers[0])"],
        id="duplicate-trigger-name",
    ),
    pytest.param(
        _replace("  - {name: Lost, category: not_succeeded}\n", "  - {category: not_succeeded}\n"),
        [
            "{f}:5: stages[3].name: missing required key 'name'",
            "{f}:10: status 'Dead' names unknown stage 'Lost'",
            "{f}:13: trigger 'quiet': unknown stage 'Lost'",
        ],
        id="stage-without-name",
    ),
    pytest.param(
        "stages: []\nstatuses: {}\n",
        ["{f}:1: stages: must list at least one"],
        id="no-stages",
    ),
    pytest.param(
        "",
        ["{f}:1: stages: missing required key 'stages'", "{f}:1: statuses: missing required key 'statuses'"],
        id="empty-file",
    ),
    pytest.param(
        "# only a comment\n",
        ["{f}:1: stages: missing required key 'stages'", "{f}:1: statuses: missing required key 'statuses'"],
        id="only-a-comment",
    ),
    pytest.param(
        "- New\n- Working\n",
        ["{f}:1: a mapping file must be a mapping with stages, statuses, triggers and overrides"],
        id="a-list-not-a-mapping",
    ),
    pytest.param(
        "just some text\n",
        ["{f}:1: a mapping file must be a mapping with stages, statuses, triggers and overrides"],
        id="a-scalar-not-a-mapping",
    ),
    pytest.param(
        _replace("  Dead: Lost\n", "  Dead: Lost\n  ? [a, b]\n  : Lost\n"),
        ["{f}:11: a key must be a plain name"],
        id="key-that-is-a-list",
    ),
]


def _criteria(condition: str) -> str:
    return _replace(
        "overrides:\n", f"  - {{name: hot, on: {condition}, from: [New], to: Working}}\noverrides:\n"
    )


ONE_OPERATOR = "a condition takes exactly one operator of equals, in, gte, gt, lte, lt, is_set, is_not_set"
MAPPING_CASES += [
    pytest.param(_criteria("{field: Score, gte: 50}"), [], id="criteria-gte"),
    pytest.param(_criteria("{field: Tier, in: [Gold, 3, true]}"), [], id="criteria-in"),
    pytest.param(_criteria("{field: Closed, lt: 2025-01-31}"), [], id="criteria-date"),
    pytest.param(_criteria("{field: Closed, lte: '2025-01-31T12:00:00+02:00'}"), [], id="criteria-datetime"),
    pytest.param(_criteria("{field: Source, is_not_set: true}"), [], id="criteria-is-not-set"),
    pytest.param(
        _criteria("{field: Score, gte: 50, lt: 90}"),
        [f"{{f}}:15: triggers[3].on: {ONE_OPERATOR}; found gte, lt"],
        id="criteria-two-operators",
    ),
    pytest.param(
        _criteria("{field: Score}"), [f"{{f}}:15: triggers[3].on: {ONE_OPERATOR}; found none"],
        id="criteria-no-operator",
    ),
    pytest.param(
        _criteria("{field: Tier, in: Gold}"), ["{f}:15: triggers[3].on.in: must be a list"], id="criteria-in-not-a-list"
    ),
    pytest.param(
        _criteria("{field: Tier, equals: [Gold, Silver]}"),
        ["{f}:15: triggers[3].on.equals: 'equals' takes one value (text, a number, true or false); "
         "for several, use 'in'"],
        id="criteria-equals-a-list",
    ),
    pytest.param(
        _criteria("{field: Tier, is_set: false}"),
        ["{f}:15: triggers[3].on.is_set: takes 'true' ('is_set: true' or 'is_not_set: true')"],
        id="criteria-is-set-false",
    ),
    pytest.param(
        _criteria("{field: Score, gte: high}"),
        ["{f}:15: triggers[3].on: 'gte' compares with a number (50) or an ISO date or date-time (2025-01-31, "
         "2025-01-31T12:00:00Z); got text"],
        id="criteria-gte-text",
    ),
    pytest.param(
        _criteria("{field: Score, gte: 1.0e999}"), ["{f}:15: triggers[3].on: 'gte' needs a finite number"],
        id="criteria-not-a-number",
    ),
    pytest.param(
        _criteria("{feld: Score, gte: 1}"),
        ["{f}:15: triggers[3].on.field: missing required key 'field'",
         "{f}:15: triggers[3].on.feld: unknown key 'feld' (did you mean 'field'?)"],
        id="criteria-misspelt-field",
    ),
]


@pytest.mark.parametrize(("text", "expected"), MAPPING_CASES)
def test_mapping_messages(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    mapping, problems = read_mapping(path)
    assert shown(problems) == expand(expected, path)
    if expected:
        assert mapping is None
    else:
        assert isinstance(mapping, StageMapping)


def test_names_differing_only_in_case_are_a_warning_and_the_mapping_loads(tmp_path: Path) -> None:
    text = _replace("  - {name: Lost, category: not_succeeded}\n",
                    "  - {name: Lost, category: not_succeeded}\n  - {name: lost, category: not_succeeded}\n")
    text = text.replace("  Dead: Lost\n", "  Dead: Lost\n  dead: lost\n")
    path = write(tmp_path, text)
    mapping, problems = read_mapping(path)
    assert shown(problems) == [
        f"{path}:6: warning: stages 'Lost' and 'lost' differ only in case",
        f"{path}:12: warning: statuses 'Dead' and 'dead' differ only in case",
    ]
    assert all(p.warning for p in problems)
    assert mapping is not None
    assert mapping.stage_for_status("dead") == "lost"
    assert mapping.stage_for_status("Dead") == "Lost"


def test_a_mapping_file_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    mapping, problems = read_mapping(path)
    assert mapping is None
    assert shown(problems) == [f"{path}: file not found"]


def test_a_file_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"stages:\n  - {name: Ung\xfcltig, category: in_progress}\n")
    mapping, problems = read_mapping(path)
    assert mapping is None
    assert len(problems) == 1
    assert str(problems[0]) == f"{path}:2: is not a UTF-8 text file (a YAML file is text)"


def test_every_problem_at_once(tmp_path: Path) -> None:
    text = """\
stages:
  - {name: New, category: in_progress}
  - {name: New, category: in_progress}
  - {name: Won, category: winning, sticky: yes please}
statuses:
  Open: New
  Closed: Wonn
triggers:
  - {name: t1, on: email_replyed, to: Won}
  - {name: t2, on: inactive, from: [Nwe], to: Won}
  - {name: t3, on: inactive, after: 10 days, to: Won}
"""
    path = write(tmp_path, text)
    mapping, problems = read_mapping(path)
    assert mapping is None
    assert shown(problems) == expand(
        [
            "{f}:3: duplicate stage 'New' (also stages[0])",
            f"{{f}}:4: stages[2].category: 'winning' is not one of {CATEGORIES}",
            "{f}:4: stages[2].sticky: 'yes please' is not true or false",
            "{f}:4: stage 'Won' has no status in 'statuses'; each stage needs exactly one",
            "{f}:7: status 'Closed' names unknown stage 'Wonn' (did you mean 'Won'?)",
            f"{{f}}:9: triggers[0].on: unknown event 'email_replyed' (did you mean 'email_replied'?); events: {EVENTS}",
            "{f}:10: triggers[1].after: missing required key 'after'",
            "{f}:10: trigger 't2': unknown stage 'Nwe' (did you mean 'New'?)",
            f"{{f}}:11: triggers[2].after: bad duration '10 days': {DURATION_HINT}",
        ],
        path,
    )


# --- what a valid mapping gives the rules --------------------------------------------------------
@pytest.fixture
def design_mapping(tmp_path: Path) -> StageMapping:
    mapping, problems = read_mapping(write(tmp_path, DESIGN_MAPPING))
    assert problems == []
    assert mapping is not None
    return mapping


def test_design_example_stages_in_funnel_order(design_mapping: StageMapping) -> None:
    assert design_mapping.stage_names == ("New", "Working", "Meeting Set", "Unresponsive")
    assert [design_mapping.index(s) for s in design_mapping.stage_names] == [0, 1, 2, 3]
    assert design_mapping.index("Meeting Set") > design_mapping.index("Working")
    assert design_mapping.category("New") is Category.IN_PROGRESS
    assert design_mapping.category("Meeting Set") is Category.SUCCEEDED
    assert design_mapping.category("Unresponsive") is Category.NOT_SUCCEEDED
    assert design_mapping.stage("Meeting Set").sticky is True
    assert design_mapping.stage("New").sticky is False
    assert design_mapping.stage("Working").remind_after == timedelta(days=10)
    assert design_mapping.stage("New").remind_after is None
    assert design_mapping.has_stage("Working")
    assert not design_mapping.has_stage("working")
    assert design_mapping.forward_only is True


def test_design_example_status_table_both_ways(design_mapping: StageMapping) -> None:
    table = {
        "Open - Not Contacted": "New",
        "Working - Contacted": "Working",
        "Closed - Converted": "Meeting Set",
        "Closed - Not Converted": "Unresponsive",
    }
    assert design_mapping.statuses == tuple(table)
    for status, stage in table.items():
        assert design_mapping.stage_for_status(status) == stage
        assert design_mapping.status_for_stage(stage) == status
    assert design_mapping.stage_for_status("Nurturing") is None  # unmapped: the record is quarantined
    assert design_mapping.stage_for_status("open - not contacted") is None  # exact match only
    with pytest.raises(KeyError):
        design_mapping.status_for_stage("Nope")


def test_design_example_triggers(design_mapping: StageMapping) -> None:
    replied, quiet, back = design_mapping.triggers
    assert isinstance(replied, ActivityTrigger)
    assert (replied.name, replied.on, replied.from_stages, replied.from_category, replied.to) == (
        "replied", "email_replied", ("New",), None, "Working",
    )
    assert replied.reactivate is False
    assert isinstance(quiet, InactiveTrigger)
    assert (quiet.on, quiet.after, quiet.from_stages, quiet.to) == (
        "inactive", timedelta(days=14), ("Working",), "Unresponsive",
    )
    assert isinstance(back, ActivityTrigger)
    assert back.from_stages is None
    assert back.from_category == (Category.NOT_SUCCEEDED,)
    assert back.reactivate is True

    assert replied.applies_from("New", Category.IN_PROGRESS)
    assert not replied.applies_from("Working", Category.IN_PROGRESS)
    assert back.applies_from("Unresponsive", Category.NOT_SUCCEEDED)
    assert not back.applies_from("New", Category.IN_PROGRESS)
    assert [t.name for t in design_mapping.activity_triggers("email_replied")] == ["replied"]
    assert [t.name for t in design_mapping.activity_triggers("inactive")] == ["gone-quiet"]
    assert list(design_mapping.activity_triggers("email_sent")) == []


def test_triggers_keep_file_order_for_first_match(tmp_path: Path) -> None:
    text = BASE.replace(
        "triggers:\n",
        "triggers:\n  - {name: first, on: email_replied, from_category: [in_progress], to: Won}\n",
    )
    mapping, problems = read_mapping(write(tmp_path, text))
    assert problems == [] and mapping is not None
    assert [t.name for t in mapping.activity_triggers("email_replied")] == ["first", "replied"]
    assert [t.name for t in mapping.triggers] == ["first", "replied", "quiet", "back"]


def test_trigger_without_from_applies_from_everywhere_and_custom_events(tmp_path: Path) -> None:
    text = BASE.replace("triggers:\n", "triggers:\n  - {name: demo, on: 'custom:demo.done-1', to: Won}\n")
    mapping, problems = read_mapping(write(tmp_path, text))
    assert problems == [] and mapping is not None
    demo = mapping.triggers[0]
    assert demo.on == "custom:demo.done-1"
    assert demo.from_stages is None and demo.from_category is None
    assert all(demo.applies_from(s.name, s.category) for s in mapping.stages)


def test_overrides_default_and_forward_only_false(tmp_path: Path) -> None:
    mapping, _ = read_mapping(write(tmp_path, BASE.replace("overrides:\n  forward_only: true\n", "")))
    assert mapping is not None and mapping.forward_only is True
    mapping, _ = read_mapping(write(tmp_path, BASE.replace("forward_only: true", "forward_only: false")))
    assert mapping is not None and mapping.forward_only is False


def test_on_stays_the_string_on(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads `on`, `off`, `yes`, `no` as booleans; the connector must not."""
    text = BASE.replace("  Open: New\n", "  on: New\n").replace("  Converted: Won\n", "  yes: Won\n")
    text = text.replace("  Dead: Lost\n", "  off: Lost\n")
    mapping, problems = read_mapping(write(tmp_path, text))
    assert problems == [] and mapping is not None
    assert mapping.triggers[0].on == "email_replied"
    assert mapping.stage_for_status("on") == "New"
    assert mapping.stage_for_status("yes") == "Won"
    assert mapping.stage_for_status("off") == "Lost"
    doc = load_yaml(write(tmp_path, "on: email_replied\nyes: no\n", "raw.yaml"))
    assert doc.data == {"on": "email_replied", "yes": "no"}


def test_dates_are_left_as_written(tmp_path: Path) -> None:
    text = BASE.replace("  Open: New\n", "  2024-01-01: New\n").replace(
        "{name: New, category: in_progress}",
        "{name: New, category: in_progress, assign: [{when: {since: 2024-03-05}, owner: '005xx'}]}",
    )
    mapping, problems = read_mapping(write(tmp_path, text))
    assert problems == [] and mapping is not None
    assert mapping.stage_for_status("2024-01-01") == "New"
    assert mapping.stage("New").assign[0].when == {"since": "2024-03-05"}
    raw = "a: 2024-01-01\nb: 2024-01-01T09:30:00Z\nc: '1.0'\nd: 1.5\ne: 7\nf: null\n"
    doc = load_yaml(write(tmp_path, raw, "x.yaml"))
    assert doc.data == {"a": "2024-01-01", "b": "2024-01-01T09:30:00Z", "c": "1.0", "d": 1.5, "e": 7, "f": None}


def test_lines_are_recorded_for_keys_and_items(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, BASE))
    assert doc.line(("statuses", "Converted")) == 9
    assert doc.line(("triggers", 1)) == 13
    assert doc.line(("triggers", 1, "after")) == 13
    assert doc.line(("stages", 3, "nope")) == 5  # a missing key points at its parent


def test_mapping_models_are_immutable(design_mapping: StageMapping) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        design_mapping.forward_only = False  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        design_mapping.stages[0].name = "Renamed"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        design_mapping.triggers[0].to = "Unresponsive"  # type: ignore[misc]
    with pytest.raises(TypeError):
        design_mapping._stage_by_status["Open - Not Contacted"] = "Working"  # type: ignore[index]
    assert isinstance(design_mapping.stages, tuple)
    assert isinstance(design_mapping.triggers, tuple)


@pytest.mark.parametrize("path", MAPPING_FILES, ids=[p.name for p in MAPPING_FILES])
def test_every_example_mapping_loads_clean(path: Path) -> None:
    mapping, problems = read_mapping(path)
    assert problems == []
    assert mapping is not None
    # one-to-one both ways, and every trigger names real stages
    for stage in mapping.stage_names:
        assert mapping.stage_for_status(mapping.status_for_stage(stage)) == stage
    assert len(mapping.statuses) == len(mapping.stage_names)
    for trigger in mapping.triggers:
        assert mapping.has_stage(trigger.to)
        assert all(mapping.has_stage(s) for s in trigger.from_stages or ())


def test_there_are_example_mappings_for_both_crms() -> None:
    names = {p.name for p in MAPPING_FILES}
    assert {"salesforce-lead.yaml", "hubspot-contact.yaml"} <= names


# --- bugs ------------------------------------------------------------------------------------------
def test_one_broken_stage_is_reported_once(tmp_path: Path) -> None:
    path = write(tmp_path, "stages:\n  - {name: New, category: in_progress, stiky: true}\nstatuses:\n  Open: New\n")
    _, problems = read_mapping(path)
    assert shown(problems) == [f"{path}:2: stages[0].stiky: unknown key 'stiky' (did you mean 'sticky'?)"]


def test_after_on_an_activity_trigger_does_not_suggest_itself(tmp_path: Path) -> None:
    path = write(tmp_path, _replace("on: email_replied, from: [New]", "on: email_replied, after: 3d, from: [New]"))
    _, problems = read_mapping(path)
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{path}:12: triggers[0].after: unknown key 'after'")
    assert "did you mean 'after'" not in str(problems[0])


@pytest.mark.parametrize("status", ["true", "false", "010", "1.50", "0x1F", "1_000"])
def test_status_keys_are_kept_as_written(tmp_path: Path, status: str) -> None:
    path = write(tmp_path, _replace("  Open: New\n", f"  {status}: New\n"))
    mapping, problems = read_mapping(path)
    assert problems == [] and mapping is not None
    assert mapping.stage_for_status(status) == "New"


def test_recursive_alias_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "stages: &loop\n  - *loop\nstatuses: {}\n")
    result = None
    with contextlib.suppress(RecursionError):  # failed below: its thousand frames take seconds to format
        result = read_mapping(path)
    assert result is not None, "read_mapping raised RecursionError"
    mapping, problems = result
    assert mapping is None
    assert problems


def test_control_character_message_is_one_line_with_a_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "stages:\n  - {name: New\x07, category: in_progress}\n")
    _, problems = read_mapping(path)
    assert len(problems) == 1
    message = str(problems[0])
    assert "\n" not in message
    assert message.startswith(f"{path}:2: YAML syntax error")


# --- any YAML at all: a mapping or a clean list of problems, never a crash ------------------------
KEYS = [
    "stages", "statuses", "triggers", "overrides", "forward_only", "name", "category", "sticky",
    "remind_after", "owner", "assign", "when", "on", "to", "from", "from_category", "after", "reactivate",
    "sources", "type", "auth", "method", "objects", "mapping", "status_field", "schedule", "writeback",
    "database", "access_token", "api_budget", "api_version", "ca_bundle",
]
WORDS = [
    "New", "Working", "Won", "Lost", "in_progress", "succeeded", "not_succeeded", "email_replied", "inactive",
    "custom:x", "14d", "0d", "10 days", "50%", "150%", "salesforce", "hubspot", "token", "${HOME}", "${NOPE}",
    "${X:-d}", "on", "yes", "2024-01-01", "62.0", "null",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.sampled_from(WORDS), st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(WORDS), st.text(min_size=1, max_size=10))
# Nested three levels deep, built by hand: st.recursive is several times slower to draw from.
shallow = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(keys, scalars, max_size=3))
middle = st.one_of(scalars, st.lists(shallow, max_size=3), st.dictionaries(keys, shallow, max_size=4))
documents = st.one_of(middle, st.lists(middle, max_size=3), st.dictionaries(keys, middle, max_size=4))
stage_docs = st.fixed_dictionaries(
    {
        "stages": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["New", "Working", "Won", "Lost", "new"]),
                 "category": st.sampled_from(["in_progress", "succeeded", "not_succeeded", "won"])},
                optional={"sticky": st.one_of(st.booleans(), st.just("yes")),
                          "remind_after": st.sampled_from(["5d", "0d", "5", "1w"])},
            ),
            max_size=4,
        ),
        "statuses": st.dictionaries(st.sampled_from(["A", "B", "C", "D", "a"]),
                                    st.sampled_from(["New", "Working", "Won", "Lost", "Gone"]), max_size=4),
    },
    optional={
        "triggers": st.lists(
            st.dictionaries(st.sampled_from(KEYS), st.one_of(scalars, st.lists(st.sampled_from(WORDS), max_size=2)),
                            max_size=6),
            max_size=3,
        ),
        "overrides": st.dictionaries(st.sampled_from(["forward_only", "backwards"]), scalars, max_size=2),
    },
)


_yaml = YAML(typ="safe", pure=True)


def _dump(data: object) -> str:
    out = io.StringIO()
    _yaml.dump(data, out)
    return out.getvalue()


@st.composite
def near_valid_mappings(draw: st.DrawFn) -> dict[str, object]:
    """A valid mapping, then (mostly) one key somewhere set to something arbitrary."""
    names = draw(st.lists(st.sampled_from(["New", "Working", "Won", "Lost", "new"]), min_size=1, max_size=5,
                          unique=True))
    categories = st.sampled_from(["in_progress", "succeeded", "not_succeeded"])
    stages: list[dict[str, object]] = [{"name": name, "category": draw(categories)} for name in names]
    triggers = [
        {"name": f"t{index}", "on": draw(st.sampled_from(["email_replied", "custom:x", "inactive"])),
         "after": "14d", "from": draw(st.lists(st.sampled_from(names), max_size=2)), "to": draw(st.sampled_from(names))}
        for index in range(draw(st.integers(0, 3)))
    ]
    for trigger in triggers:
        if trigger["on"] != "inactive":
            del trigger["after"]
    doc: dict[str, object] = {
        "stages": stages,
        "statuses": {f"{name.upper()}-{index}": name for index, name in enumerate(names)},
        "triggers": triggers,
    }
    where = draw(st.sampled_from(["none", "top", "stage", "trigger", "statuses"]))
    key, value = draw(st.sampled_from(KEYS)), draw(middle)
    if where == "top":
        doc[key] = value
    elif where == "stage":
        stages[draw(st.integers(0, len(stages) - 1))][key] = value
    elif where == "trigger" and triggers:
        triggers[0][key] = value
    elif where == "statuses":
        doc["statuses"] = {**doc["statuses"], draw(keys): value}  # type: ignore[dict-item]
    return doc


yaml_texts = st.one_of(
    near_valid_mappings().map(_dump), documents.map(_dump), stage_docs.map(_dump), st.text(max_size=200),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=yaml_texts)
def test_any_yaml_gives_a_mapping_or_problems(scratch: Path, text: str | bytes) -> None:
    path = scratch / "fuzz.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    mapping, problems = read_mapping(path)
    assert all(isinstance(p, Problem) and p.file == path for p in problems)
    assert all(p.line is None or p.line >= 1 for p in problems)
    if mapping is None:
        assert any(not p.warning for p in problems)
    else:
        assert all(p.warning for p in problems)
        for stage in mapping.stage_names:
            assert mapping.stage_for_status(mapping.status_for_stage(stage)) == stage
        assert len(set(mapping.statuses)) == len(mapping.stage_names)
