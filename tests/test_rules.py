"""The rule semantics of DESIGN.md ("Rule semantics (the contract)") as a table over the pure functions.

Every row starts from a record state, applies one decision function and states what the contract
says must come out: the record's stage, `set_by`, `remote_status`, quarantine and clocks, the history
entry (a move, a recorded suppression with its reason, or none) and the write-back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector import rules
from connector.mapping import StageMapping, read_mapping
from connector.rules import Cause, Decision, RecordState, SetBy

# Funnel order is list order. `Unqualified` is a not_succeeded stage in the middle of the funnel, so
# that a move *into* a not_succeeded stage can go backwards.
MAPPING = """\
stages:
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress}
  - {name: Unqualified,  category: not_succeeded}
  - {name: Qualified,    category: in_progress}
  - {name: Meeting Set,  category: succeeded, sticky: true}
  - {name: Won,          category: succeeded}
  - {name: Unresponsive, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Not a Fit: Unqualified
  Qualified: Qualified
  Meeting: Meeting Set
  Closed Won: Won
  No Response: Unresponsive
triggers:                       # first match in file order wins
  - {name: replied,       on: email_replied, from: [New], to: Working}
  - {name: replied-again, on: email_replied, from: [Working], to: Qualified}
  - {name: replied-any,   on: email_replied, to: Won}
  - {name: booked,        on: meeting_booked, to: Meeting Set}
  - {name: opened,        on: email_opened, to: New}
  - {name: came-back,     on: form_submitted, from_category: [not_succeeded], to: Working, reactivate: true}
  - {name: form-fill,     on: form_submitted, from_category: [in_progress], to: Qualified}
  - {name: disqualify,    on: call_logged, from: [Qualified], to: Unqualified}
  - {name: demo,          on: "custom:demo_done", from: [Working], to: Qualified}
  - {name: gone-quiet,    on: inactive, after: 14d, from: [Working], to: Unresponsive}
  - {name: nudge,         on: inactive, after: 30d, from: [New], to: Working}
  - {name: meeting-stale, on: inactive, after: 7d, from: [Meeting Set], to: Unresponsive}
  - {name: cooled-off,    on: inactive, after: 10d, from: [Qualified], to: Working}
overrides:
  forward_only: true
"""

# The same funnel with backwards moves allowed.
FREE = MAPPING.replace("forward_only: true", "forward_only: false")

# After a mapping change: `Contacted` now means Qualified, `Qualified` means Working, and the status
# `No Response` is gone from the table (its stage now takes `Dormant`); `Legacy` is new.
REMAPPED = (
    MAPPING.replace("  Contacted: Working\n", "  Contacted: Qualified\n")
    .replace("  Qualified: Qualified\n", "  Legacy: Working\n")
    .replace("  No Response: Unresponsive\n", "  Dormant: Unresponsive\n")
)

# The same funnel with criteria triggers only: conditions on fields read with each record.
CRITERIA = MAPPING.split("triggers:")[0] + """\
triggers:
  - {name: hot,       on: {field: Score, gte: 50}, from: [New, Working], to: Qualified}
  - {name: partner,   on: {field: LeadSource, equals: Partner Referral}, from: [New], to: Working}
  - {name: vip,       on: {field: VIP, equals: true}, from: [New], to: Qualified}
  - {name: tiered,    on: {field: Tier, in: [Gold, Platinum]}, to: Won}
  - {name: cold,      on: {field: Score, lt: 10}, from: [Qualified], to: Working}
  - {name: opted-out, on: {field: OptOut, is_set: true}, from_category: [in_progress], to: Unresponsive}
  - {name: no-owner,  on: {field: Rep, is_not_set: true}, from: [Won], to: Qualified}
  - {name: demo, on: {field: DemoAt, gt: 2025-01-01}, from_category: [not_succeeded], to: Working, reactivate: true}
  - {name: lapsed,    on: {field: RenewsAt, lte: "2024-06-30T00:00:00Z"}, from: [Won], to: Unresponsive}
  - {name: big,       on: {field: Seats, gt: 100}, from: [Unresponsive], to: Working}
overrides:
  forward_only: true
"""
CRITERIA_FREE = CRITERIA.replace("forward_only: true", "forward_only: false")

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ANY = object()  # "the contract does not say": not checked


def _read(folder: Path, name: str, text: str) -> StageMapping:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    mapping, problems = read_mapping(path)
    assert mapping is not None, [str(p) for p in problems]
    assert not problems, [str(p) for p in problems]
    return mapping


@pytest.fixture(scope="module")
def mappings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageMapping]:
    folder = tmp_path_factory.mktemp("mappings")
    return {
        "fwd": _read(folder, "forward.yaml", MAPPING),
        "free": _read(folder, "free.yaml", FREE),
        "remapped": _read(folder, "remapped.yaml", REMAPPED),
        "crit": _read(folder, "criteria.yaml", CRITERIA),
        "crit-free": _read(folder, "criteria-free.yaml", CRITERIA_FREE),
    }


def test_mapping_reads_as_written(mappings: dict[str, StageMapping]) -> None:
    fwd, free = mappings["fwd"], mappings["free"]
    assert fwd.forward_only is True
    assert free.forward_only is False
    assert fwd.stage_names == ("New", "Working", "Unqualified", "Qualified", "Meeting Set", "Won", "Unresponsive")
    assert fwd.stage("Meeting Set").sticky
    assert [t.name for t in fwd.triggers][:3] == ["replied", "replied-again", "replied-any"]


def state(
    stage: str | None = "Working",
    set_by: SetBy | None = SetBy.EXTERNAL,
    remote_status: str | None = "__default__",
    entered: datetime | None = T0,
    activity: datetime | None = None,
    quarantined: str | None = None,
) -> RecordState:
    """A record as the store holds it; by default the CRM holds the stage's status."""
    statuses = {
        "New": "Open", "Working": "Contacted", "Unqualified": "Not a Fit", "Qualified": "Qualified",
        "Meeting Set": "Meeting", "Won": "Closed Won", "Unresponsive": "No Response",
    }
    if remote_status == "__default__":
        remote_status = statuses.get(stage) if stage else None
    return RecordState(
        stage=stage,
        set_by=set_by,
        remote_status=remote_status,
        stage_entered_at=entered,
        last_activity_at=activity,
        quarantined=quarantined,
    )


Decide = Callable[[RecordState, StageMapping], Decision]


@dataclass(frozen=True)
class Move:
    """The history entry a decision must record."""

    from_stage: str | None
    to_stage: str | None
    suppressed: bool = False
    reason: str | None = None  # a text the reason must contain ("" : any non-empty reason)
    rule: str | object | None = ANY
    cause: Cause | object = ANY
    at: datetime | object = ANY


@dataclass(frozen=True)
class Case:
    before: RecordState
    decide: Decide
    mapping: str = "fwd"
    after: dict[str, Any] = field(default_factory=dict)  # contract fields that change (ANY: unchecked)
    history: Move | object | None = None  # None: nothing recorded
    writeback: str | object | None = None
    cancel: bool | object = False


CONTRACT_FIELDS = ("stage", "set_by", "remote_status", "quarantined", "stage_entered_at", "last_activity_at")


def status(value: str, at: datetime = T0 + DAY) -> Decide:
    return lambda s, m: rules.on_status(s, value, m, at)


def event(name: str, at: datetime = T0 + DAY) -> Decide:
    return lambda s, m: rules.on_activity(s, name, m, at)


def timer(now: datetime) -> Decide:
    return lambda s, m: rules.on_time(s, m, now)


def manual(stage: str, by: SetBy = SetBy.MANUAL, at: datetime = T0 + DAY) -> Decide:
    return lambda s, m: rules.manual_set(s, stage, m, at, by)


def unlock(at: datetime = T0 + DAY) -> Decide:
    return lambda s, m: rules.unlock(s, at)


def remap(at: datetime = T0 + DAY) -> Decide:
    return lambda s, m: rules.remap(s, m, at)


def fields(before: dict[str, Any] | None, after: dict[str, Any], *, first_read: bool = False) -> Decide:
    """A read whose fields were `before` at the previous read (None: no previous read) and are `after` now."""
    return lambda s, m: rules.on_fields(s, before, after, m, T0 + DAY, first_read=first_read)


AT = T0 + DAY  # when the rows' decisions happen


def crit(
    name: str, before: RecordState, decide: Decide, to: str | None = None, *,
    suppressed: str | None = None, rule: str | object = ANY, mapping: str = "crit",
) -> Any:
    """A criteria row: `to` moves there (write-back of its status), `suppressed` records that reason,
    neither: nothing happens and nothing is recorded."""
    statuses = {"New": "Open", "Working": "Contacted", "Qualified": "Qualified", "Won": "Closed Won",
                "Unresponsive": "No Response", "Unqualified": "Not a Fit", "Meeting Set": "Meeting"}
    if to is not None and suppressed is None:
        case = Case(
            before, decide, mapping,
            after={"stage": to, "set_by": SetBy.TRIGGER, "stage_entered_at": AT},
            history=Move(before.stage, to, rule=rule, cause=Cause.CRITERIA, at=AT),
            writeback=statuses[to],
        )
    elif suppressed is not None:
        case = Case(before, decide, mapping, history=Move(before.stage, to, True, suppressed, rule, Cause.CRITERIA))
    else:
        case = Case(before, decide, mapping)
    return pytest.param(case, id=f"crit-{name}")

CASES = [
    # --- rule 1: a status read from the CRM --------------------------------------------------------
    pytest.param(Case(state("Working"), status("Contacted")), id="1-echo-nothing"),
    pytest.param(
        # Our manual set to New is not yet written: the CRM still says Contacted. Reading Contacted
        # back is not a change, so it must not undo the manual set.
        Case(state("New", SetBy.MANUAL, remote_status="Contacted"), status("Contacted")),
        id="1-echo-of-a-status-we-have-not-written-yet",
    ),
    pytest.param(
        Case(state("Working", quarantined="Recycled", remote_status="Recycled"), status("Recycled")),
        id="1-echo-of-the-quarantined-status",
    ),
    pytest.param(
        Case(
            state("Working"), status("Recycled"),
            after={"remote_status": "Recycled", "quarantined": "Recycled"},
            history=Move("Working", "Working", suppressed=True, reason="Recycled", cause=Cause.EXTERNAL),
            cancel=ANY,
        ),
        id="1-unmapped-quarantined-stage-kept-and-recorded",
    ),
    pytest.param(
        Case(
            state(None, None, remote_status=None, entered=None), status("Recycled"),
            after={"remote_status": "Recycled", "quarantined": "Recycled"},
            history=Move(None, None, suppressed=True, reason="Recycled"),
            cancel=ANY,
        ),
        id="1-unmapped-on-a-new-record",
    ),
    pytest.param(
        Case(
            state("Working", quarantined="Recycled", remote_status="Recycled"), status("Other Unknown"),
            after={"remote_status": "Other Unknown", "quarantined": "Other Unknown"},
            history=Move("Working", "Working", suppressed=True, reason="Other Unknown"),
            cancel=ANY,
        ),
        id="1-another-unmapped-status-while-quarantined",
    ),
    pytest.param(
        Case(
            state("Working", SetBy.TRIGGER, quarantined="Recycled", remote_status="Recycled"), status("Qualified"),
            after={"stage": "Qualified", "set_by": SetBy.EXTERNAL, "remote_status": "Qualified",
                   "quarantined": None, "stage_entered_at": AT},
            history=Move("Working", "Qualified", cause=Cause.EXTERNAL, at=AT),
            cancel=True,
        ),
        id="1-mapped-status-clears-quarantine",
    ),
    pytest.param(
        Case(
            state("Working", SetBy.TRIGGER, quarantined="Recycled", remote_status="Recycled"), status("Contacted"),
            after={"set_by": SetBy.EXTERNAL, "remote_status": "Contacted", "quarantined": None},
            history=ANY, cancel=True,
        ),
        id="1-mapped-status-of-the-current-stage-clears-quarantine",
    ),
    pytest.param(
        Case(
            state("Working", SetBy.TRIGGER), status("Open"),
            after={"stage": "New", "set_by": SetBy.EXTERNAL, "remote_status": "Open", "stage_entered_at": AT},
            history=Move("Working", "New", cause=Cause.EXTERNAL, at=AT),  # backwards: the CRM is authoritative
            cancel=True,
        ),
        id="1-external-move-backwards-no-writeback-pending-cancelled",
    ),
    pytest.param(
        Case(
            state("Meeting Set", SetBy.MANUAL), status("No Response"),
            after={"stage": "Unresponsive", "set_by": SetBy.EXTERNAL, "remote_status": "No Response",
                   "stage_entered_at": AT},
            history=Move("Meeting Set", "Unresponsive", cause=Cause.EXTERNAL),
            cancel=True,
        ),
        id="1-external-move-off-a-sticky-stage",
    ),
    pytest.param(
        Case(
            state(None, None, remote_status=None, entered=None), status("Qualified"),
            after={"stage": "Qualified", "set_by": SetBy.EXTERNAL, "remote_status": "Qualified",
                   "stage_entered_at": AT},
            history=Move(None, "Qualified", cause=Cause.EXTERNAL),
            cancel=ANY,
        ),
        id="1-first-read-of-a-record",
    ),
    pytest.param(
        # A person set, in the CRM, the status our pending write-back was going to write.
        Case(
            state("Qualified", SetBy.TRIGGER, remote_status="Contacted"), status("Qualified"),
            after={"set_by": SetBy.EXTERNAL, "remote_status": "Qualified"},
            history=None, cancel=ANY,
        ),
        id="1-crm-agrees-with-our-stage",
    ),
    # --- rule 2: activity events; e: the move -----------------------------------------------------
    pytest.param(
        Case(
            state("New"), event("email_replied"),
            after={"stage": "Working", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("New", "Working", rule="replied", cause=Cause.EVENT, at=AT),
            writeback="Contacted",
        ),
        id="2e-move-set-by-trigger-queues-status-first-match-wins",
    ),
    pytest.param(
        Case(
            state("Working"), event("email_replied"),
            after={"stage": "Qualified", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("Working", "Qualified", rule="replied-again"),
            writeback="Qualified",
        ),
        id="2e-from-filter-picks-the-second-trigger",
    ),
    pytest.param(
        Case(
            state("Qualified"), event("email_replied"),
            after={"stage": "Won", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("Qualified", "Won", rule="replied-any"),
            writeback="Closed Won",
        ),
        id="2e-trigger-without-from-applies-to-any-stage",
    ),
    pytest.param(
        Case(
            state("New"), event("form_submitted"),
            after={"stage": "Qualified", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("New", "Qualified", rule="form-fill"),
            writeback="Qualified",
        ),
        id="2e-from_category-skips-a-trigger-for-another-category",
    ),
    pytest.param(
        Case(state("Won"), event("form_submitted"), after={"last_activity_at": AT}),
        id="2-from_category-matches-no-trigger-activity-only",
    ),
    pytest.param(
        Case(state("New"), event("call_logged"), after={"last_activity_at": AT}),
        id="2-from-matches-no-trigger-activity-only",
    ),
    pytest.param(
        Case(state("Working"), event("email_sent"), after={"last_activity_at": AT}),
        id="2-event-without-trigger-updates-last-activity",
    ),
    pytest.param(
        Case(
            state("Working", activity=T0 + 5 * DAY), event("email_sent", at=T0 + 2 * DAY),
        ),
        id="2-older-event-never-moves-last-activity-back",
    ),
    pytest.param(
        Case(
            state("New", activity=T0 + 5 * DAY), event("email_replied", at=T0 + 2 * DAY),
            after={"stage": "Working", "set_by": SetBy.TRIGGER, "stage_entered_at": ANY},
            history=Move("New", "Working", rule="replied"),
            writeback="Contacted",
        ),
        id="2-older-event-still-triggers-last-activity-kept",
    ),
    pytest.param(
        Case(
            state("Working"), event("custom:demo_done"),
            after={"stage": "Qualified", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("Working", "Qualified", rule="demo"),
            writeback="Qualified",
        ),
        id="2e-custom-event",
    ),
    pytest.param(
        Case(
            state(None, None, remote_status="Recycled", entered=None, quarantined="Recycled"),
            event("email_replied"), after={"last_activity_at": AT},
        ),
        id="2-record-without-a-stage-activity-only",
    ),
    # a: the target is the current stage
    pytest.param(
        Case(state("Won"), event("email_replied"), after={"last_activity_at": AT}),
        id="2a-target-is-current-nothing",
    ),
    pytest.param(
        Case(state("Meeting Set", SetBy.MANUAL), event("meeting_booked"), after={"last_activity_at": AT}),
        id="2a-before-2b-sticky-target-is-current",
    ),
    # b: sticky and set by a person or the CRM
    *[
        pytest.param(
            Case(
                state("Meeting Set", by), event("email_replied"),
                after={"last_activity_at": AT},
                history=Move("Meeting Set", "Won", suppressed=True, reason="sticky", rule="replied-any"),
            ),
            id=f"2b-sticky-set-by-{by.value}-suppressed",
        )
        for by in (SetBy.EXTERNAL, SetBy.MANUAL, SetBy.IMPORT)
    ],
    pytest.param(
        Case(
            state("Meeting Set", SetBy.MANUAL), event("email_opened"),
            after={"last_activity_at": AT},
            history=Move("Meeting Set", "New", suppressed=True, reason="sticky", rule="opened"),
        ),
        id="2b-before-2d-sticky-reason-wins-over-backwards",
    ),
    *[
        pytest.param(
            Case(
                state("Meeting Set", by), event("email_replied"),
                after={"stage": "Won", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
                history=Move("Meeting Set", "Won", rule="replied-any"),
                writeback="Closed Won",
            ),
            id=f"2b-sticky-set-by-{by.value}-moves",
        )
        for by in (SetBy.TRIGGER, SetBy.RESYNC)
    ],
    # c: not_succeeded without reactivate
    pytest.param(
        Case(
            state("Unresponsive"), event("email_opened"),
            after={"last_activity_at": AT},
            history=Move("Unresponsive", "New", suppressed=True, reason="", rule="opened"),
        ),
        id="2c-not-succeeded-without-reactivate-suppressed",
    ),
    pytest.param(
        Case(
            state("Unresponsive"), event("email_replied"),
            after={"last_activity_at": AT},
            history=Move("Unresponsive", "Won", suppressed=True, reason="", rule="replied-any"),
        ),
        id="2c-not-succeeded-forward-without-reactivate-suppressed",
    ),
    pytest.param(
        Case(
            state("Unresponsive"), event("form_submitted"),
            after={"stage": "Working", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("Unresponsive", "Working", rule="came-back"),
            writeback="Contacted",
        ),
        id="2c-reactivate-moves-backwards-out-of-not-succeeded",
    ),
    # d: backwards
    pytest.param(
        Case(
            state("Working"), event("email_opened"),
            after={"last_activity_at": AT},
            history=Move("Working", "New", suppressed=True, reason="would move backwards", rule="opened"),
        ),
        id="2d-backwards-with-forward_only-suppressed",
    ),
    pytest.param(
        Case(
            state("Working"), event("email_opened"), mapping="free",
            after={"stage": "New", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("Working", "New", rule="opened"),
            writeback="Open",
        ),
        id="2d-backwards-allowed-without-forward_only",
    ),
    pytest.param(
        Case(
            state("Qualified"), event("call_logged"),
            after={"stage": "Unqualified", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("Qualified", "Unqualified", rule="disqualify"),
            writeback="Not a Fit",
        ),
        id="2d-backwards-into-not-succeeded-allowed",
    ),
    pytest.param(
        Case(
            state("Meeting Set", SetBy.TRIGGER), event("email_opened"),
            after={"last_activity_at": AT},
            history=Move("Meeting Set", "New", suppressed=True, reason="would move backwards"),
        ),
        id="2d-unlocked-sticky-still-forward-only",
    ),
    pytest.param(
        Case(
            state("Qualified", SetBy.MANUAL), event("email_opened"), mapping="free",
            after={"stage": "New", "set_by": SetBy.TRIGGER, "last_activity_at": AT, "stage_entered_at": AT},
            history=Move("Qualified", "New", rule="opened"),
            writeback="Open",
        ),
        id="2e-manual-set-on-a-non-sticky-stage-does-not-lock",
    ),
    # --- the time event `inactive` ---------------------------------------------------------------
    pytest.param(Case(state("Working"), timer(T0 + 14 * DAY - timedelta(seconds=1))), id="inactive-not-yet"),
    pytest.param(
        Case(
            state("Working"), timer(T0 + 14 * DAY),
            after={"stage": "Unresponsive", "set_by": SetBy.TRIGGER, "stage_entered_at": T0 + 14 * DAY},
            history=Move("Working", "Unresponsive", rule="gone-quiet", cause=Cause.INACTIVE, at=T0 + 14 * DAY),
            writeback="No Response",
        ),
        id="inactive-exactly-at-the-boundary",
    ),
    pytest.param(
        Case(
            state("Working"), timer(T0 + 40 * DAY),
            after={"stage": "Unresponsive", "set_by": SetBy.TRIGGER, "stage_entered_at": ANY},
            history=Move("Working", "Unresponsive", rule="gone-quiet", cause=Cause.INACTIVE),
            writeback="No Response",
        ),
        id="inactive-long-overdue",
    ),
    pytest.param(
        Case(state("Working", activity=T0 + 3 * DAY), timer(T0 + 16 * DAY)),
        id="inactive-measured-from-last-activity-not-yet",
    ),
    pytest.param(
        Case(
            state("Working", activity=T0 + 3 * DAY), timer(T0 + 17 * DAY),
            after={"stage": "Unresponsive", "set_by": SetBy.TRIGGER, "stage_entered_at": T0 + 17 * DAY},
            history=Move("Working", "Unresponsive", rule="gone-quiet", at=T0 + 17 * DAY),
            writeback="No Response",
        ),
        id="inactive-measured-from-last-activity-due",
    ),
    pytest.param(
        Case(
            state("Working", entered=T0 + 3 * DAY, activity=T0 - 30 * DAY), timer(T0 + 17 * DAY),
            after={"stage": "Unresponsive", "set_by": SetBy.TRIGGER, "stage_entered_at": T0 + 17 * DAY},
            history=Move("Working", "Unresponsive", rule="gone-quiet", at=T0 + 17 * DAY),
            writeback="No Response",
        ),
        id="inactive-measured-from-stage-entry-when-later",
    ),
    pytest.param(
        Case(state("Working", entered=T0 + 3 * DAY, activity=T0 - 30 * DAY), timer(T0 + 16 * DAY)),
        id="inactive-stage-entry-later-not-yet",
    ),
    pytest.param(
        Case(
            state("New"), timer(T0 + 30 * DAY),
            after={"stage": "Working", "set_by": SetBy.TRIGGER, "stage_entered_at": T0 + 30 * DAY},
            history=Move("New", "Working", rule="nudge"),
            writeback="Contacted",
        ),
        id="inactive-from-filter-picks-the-stage's-trigger",
    ),
    pytest.param(Case(state("Won"), timer(T0 + 400 * DAY)), id="inactive-no-trigger-for-the-stage"),
    pytest.param(
        Case(
            state("Meeting Set", SetBy.MANUAL), timer(T0 + 7 * DAY),
            history=Move("Meeting Set", "Unresponsive", suppressed=True, reason="sticky", rule="meeting-stale"),
        ),
        id="inactive-2b-sticky-suppressed",
    ),
    pytest.param(
        Case(
            state("Qualified"), timer(T0 + 10 * DAY),
            history=Move("Qualified", "Working", suppressed=True, reason="would move backwards", rule="cooled-off"),
        ),
        id="inactive-2d-backwards-suppressed",
    ),
    pytest.param(
        Case(
            state("Qualified"), timer(T0 + 10 * DAY), mapping="free",
            after={"stage": "Working", "set_by": SetBy.TRIGGER, "stage_entered_at": T0 + 10 * DAY},
            history=Move("Qualified", "Working", rule="cooled-off"),
            writeback="Contacted",
        ),
        id="inactive-backwards-allowed-without-forward_only",
    ),
    # --- rule 3: by hand -------------------------------------------------------------------------
    pytest.param(
        Case(
            state("Working"), manual("New"),
            after={"stage": "New", "set_by": SetBy.MANUAL, "stage_entered_at": AT},
            history=Move("Working", "New", cause=Cause.MANUAL, at=AT),
            writeback="Open",
        ),
        id="3-manual-set-backwards-applies-queues-writeback",
    ),
    pytest.param(
        Case(
            state("Unresponsive"), manual("Won"),
            after={"stage": "Won", "set_by": SetBy.MANUAL, "stage_entered_at": AT},
            history=Move("Unresponsive", "Won", cause=Cause.MANUAL),
            writeback="Closed Won",
        ),
        id="3-manual-set-out-of-not-succeeded",
    ),
    pytest.param(
        Case(
            state("Meeting Set", SetBy.EXTERNAL), manual("Working"),
            after={"stage": "Working", "set_by": SetBy.MANUAL, "stage_entered_at": AT},
            history=Move("Meeting Set", "Working", cause=Cause.MANUAL),
            writeback="Contacted",
        ),
        id="3-manual-set-off-a-sticky-stage",
    ),
    pytest.param(
        Case(
            state("Working"), manual("Meeting Set", SetBy.IMPORT),
            after={"stage": "Meeting Set", "set_by": SetBy.IMPORT, "stage_entered_at": AT},
            history=Move("Working", "Meeting Set", cause=Cause.IMPORT),
            writeback="Meeting",
        ),
        id="3-import-sets-set_by-import",
    ),
    pytest.param(
        Case(
            state("Working", SetBy.TRIGGER), manual("Working"),
            after={"set_by": SetBy.MANUAL, "stage_entered_at": ANY},
            history=ANY,
            writeback=None, cancel=ANY,
        ),
        id="3-manual-set-to-the-status-the-crm-holds-no-writeback",
    ),
    pytest.param(
        Case(
            state("New", SetBy.MANUAL, remote_status="Contacted"), manual("Working"),
            after={"stage": "Working", "set_by": SetBy.MANUAL, "stage_entered_at": AT},
            history=Move("New", "Working", cause=Cause.MANUAL),
            writeback=None, cancel=ANY,
        ),
        id="3-manual-set-back-to-what-the-crm-holds-no-writeback",
    ),
    pytest.param(
        Case(
            state(None, None, remote_status="Recycled", entered=None, quarantined="Recycled"), manual("Qualified"),
            after={"stage": "Qualified", "set_by": SetBy.MANUAL, "stage_entered_at": AT, "quarantined": ANY},
            history=Move(None, "Qualified", cause=Cause.MANUAL),
            writeback="Qualified",
        ),
        id="3-manual-set-on-a-quarantined-record-applies",
    ),
    pytest.param(
        Case(state("Meeting Set", SetBy.MANUAL), unlock(), after={"set_by": SetBy.TRIGGER}, history=ANY),
        id="3-unlock-sets-set_by-trigger",
    ),
    # --- remap (`resync --remap`) --------------------------------------------------------------
    pytest.param(
        Case(
            state("Working"), remap(), mapping="remapped",
            after={"stage": "Qualified", "set_by": ANY, "stage_entered_at": AT},
            history=Move("Working", "Qualified", cause=Cause.RESYNC),
        ),
        id="remap-stage-follows-the-status-under-the-new-table",
    ),
    pytest.param(
        Case(
            state("Unresponsive"), remap(), mapping="remapped",
            after={"quarantined": "No Response"},
            history=Move("Unresponsive", "Unresponsive", suppressed=True, reason="No Response"),
        ),
        id="remap-status-no-longer-mapped-quarantines",
    ),
    pytest.param(
        Case(
            state("Working", remote_status="Legacy", quarantined="Legacy"), remap(), mapping="remapped",
            after={"quarantined": None, "set_by": ANY},
            history=ANY,
        ),
        id="remap-quarantined-status-now-mapped-clears",
    ),
    pytest.param(Case(state("New"), remap(), mapping="remapped"), id="remap-unchanged-status-nothing"),
    pytest.param(
        Case(state(None, None, remote_status=None, entered=None), remap(), mapping="remapped"),
        id="remap-never-read-nothing",
    ),
]


CASES += [
    # --- criteria: a condition on the fields read with the record becomes true ----------------------
    crit("becomes-true-moves", state("Working"), fields({"Score": 42}, {"Score": 55}), "Qualified", rule="hot"),
    crit("exactly-the-threshold", state("Working"), fields({"Score": 49}, {"Score": 50}), "Qualified"),
    crit("stays-true-nothing", state("Working"), fields({"Score": 55}, {"Score": 60})),
    crit("unchanged-true-nothing", state("Working"), fields({"Score": 55}, {"Score": 55})),
    crit("false-to-false-nothing", state("Working"), fields({"Score": 10}, {"Score": 49})),
    crit("true-to-false-nothing", state("Working"), fields({"Score": 60}, {"Score": 20})),
    crit("no-previous-read-nothing", state("Working"), fields(None, {"Score": 55})),
    # The previous read did not carry the field (the trigger is newer): no "before", no move.
    crit("field-not-read-before-nothing", state("Working"), fields({"Other": "x"}, {"Score": 55})),
    crit("field-read-before-as-null", state("Working"), fields({"Score": None}, {"Score": 55}), "Qualified"),
    crit("first-read-true-moves", state("New"), fields(None, {"Score": 70}, first_read=True), "Qualified"),
    crit("first-read-false-nothing", state("New"), fields(None, {"Score": 7}, first_read=True)),
    # Numbers compare as numbers whatever the CRM sends: HubSpot's strings, Salesforce's JSON numbers.
    crit("number-as-text", state("Working"), fields({"Score": "42"}, {"Score": "55"}), "Qualified"),
    crit("number-as-float", state("Working"), fields({"Score": 42.5}, {"Score": 50.0}), "Qualified"),
    crit("text-9-is-less-than-50", state("Working"), fields({"Score": "9"}, {"Score": "10"})),
    crit("number-with-spaces", state("Working"), fields({"Score": "1"}, {"Score": " 51 "}), "Qualified"),
    crit("unparsable-is-false", state("Working"), fields({"Score": 42}, {"Score": "high"})),
    crit("unparsable-before-was-false", state("Working"), fields({"Score": "n/a"}, {"Score": 80}), "Qualified"),
    crit("boolean-is-not-a-number", state("Working"), fields({"Score": False}, {"Score": True})),
    crit("nan-is-false", state("Working"), fields({"Score": 1}, {"Score": "NaN"})),
    # equals and in: text without regard to case.
    crit("equals-any-case", state("New"), fields({"LeadSource": "Web"}, {"LeadSource": "partner REFERRAL"}),
         "Working", rule="partner"),
    crit("equals-other-value", state("New"), fields({"LeadSource": "Web"}, {"LeadSource": "Partner"})),
    crit("equals-boolean", state("New"), fields({"VIP": False}, {"VIP": True}), "Qualified", rule="vip"),
    crit("equals-boolean-as-text", state("New"), fields({"VIP": "false"}, {"VIP": "TRUE"}), "Qualified"),
    crit("in-list", state("Working"), fields({"Tier": "Silver"}, {"Tier": "gold"}), "Won", rule="tiered"),
    crit("in-list-from-one-to-another", state("Working"), fields({"Tier": "Gold"}, {"Tier": "Platinum"})),
    crit("in-list-not-in", state("Working"), fields({"Tier": "Silver"}, {"Tier": "Bronze"})),
    crit("is-set", state("Working"), fields({"OptOut": None}, {"OptOut": "2024-05-01"}), "Unresponsive"),
    crit("blank-is-not-set", state("Working"), fields({"OptOut": None}, {"OptOut": "   "})),
    crit("is-not-set", state("Won"), fields({"Rep": "005A"}, {"Rep": ""}), "Qualified", rule="no-owner",
         mapping="crit-free"),
    crit("missing-field-is-not-set", state("Won"), fields({"Rep": "005A"}, {}), "Qualified", mapping="crit-free"),
    # Dates and date-times compare as instants; HubSpot may send epoch milliseconds.
    crit("date-after", state("Unresponsive"), fields({"DemoAt": "2024-12-01"}, {"DemoAt": "2025-02-01T10:00:00Z"}),
         "Working", rule="demo"),
    crit("date-epoch-millis", state("Unresponsive"), fields({"DemoAt": "1700000000000"}, {"DemoAt": "1740000000000"}),
         "Working"),
    crit("date-on-the-bound-is-not-after", state("Unresponsive"),
         fields({"DemoAt": "2024-12-01"}, {"DemoAt": "2025-01-01T00:00:00+00:00"})),
    crit("date-with-offset", state("Unresponsive"),
         fields({"DemoAt": "2024-12-01"}, {"DemoAt": "2025-01-01T00:30:00+01:00"})),
    crit("date-unparsable", state("Unresponsive"), fields({"DemoAt": "2024-12-01"}, {"DemoAt": "soon"})),
    crit("date-millis-past-year-9999", state("Unresponsive"),
         fields({"DemoAt": "2024-12-01"}, {"DemoAt": "999999999999999"})),
    crit("date-not-a-day", state("Unresponsive"), fields({"DemoAt": "2024-12-01"}, {"DemoAt": "2025-13-45"})),
    crit("datetime-bound-date-value", state("Won"), fields({"RenewsAt": "2024-07-01"}, {"RenewsAt": "2024-06-30"}),
         "Unresponsive", rule="lapsed"),
    # from / from_category, and the first trigger in file order that became true.
    crit("from-does-not-match", state("Qualified"), fields({"LeadSource": "Web"}, {"LeadSource": "Partner Referral"})),
    crit("first-in-file-order", state("New"), fields({"Score": 1, "LeadSource": "Web"},
                                                     {"Score": 90, "LeadSource": "Partner Referral"}),
         "Qualified", rule="hot"),
    crit("staying-true-is-skipped-for-a-later-one", state("Working"),
         fields({"Score": 60, "Tier": "Silver"}, {"Score": 70, "Tier": "Gold"}), "Won", rule="tiered"),
    crit("never-seen-stage-nothing", state(None, None, entered=None), fields({"Score": 1}, {"Score": 90})),
    # The overrides (rules 2a-2e) as for any trigger.
    crit("target-is-current-nothing", state("Won"), fields({"Tier": "Silver"}, {"Tier": "Gold"})),
    crit("sticky-suppressed", state("Meeting Set"), fields({"Tier": "Silver"}, {"Tier": "Gold"}), "Won",
         suppressed="sticky", rule="tiered"),
    crit("sticky-set-by-trigger-moves", state("Meeting Set", SetBy.TRIGGER), fields({"Tier": "x"}, {"Tier": "Gold"}),
         "Won"),
    crit("not-succeeded-without-reactivate", state("Unresponsive"), fields({"Tier": "x"}, {"Tier": "Gold"}), "Won",
         suppressed="not-succeeded"),
    crit("not-succeeded-reactivate", state("Unqualified"), fields({"DemoAt": None}, {"DemoAt": "2025-03-03"}),
         "Working"),
    crit("forward-only-suppressed", state("Qualified"), fields({"Score": 20}, {"Score": 5}), "Working",
         suppressed="would move backwards", rule="cold"),
    crit("backwards-allowed", state("Qualified"), fields({"Score": 20}, {"Score": 5}), "Working",
         mapping="crit-free"),
    crit("quarantined-suppressed", state("Working", quarantined="Recycled", remote_status="Recycled"),
         fields({"Score": 2}, {"Score": 99}), "Qualified", suppressed="quarantined"),
    pytest.param(
        Case(
            state("Working", remote_status="Qualified"), fields({"Score": 2}, {"Score": 99}), "crit",
            after={"stage": "Qualified", "set_by": SetBy.TRIGGER, "stage_entered_at": AT},
            history=Move("Working", "Qualified"), writeback=None, cancel=True,
        ),
        id="crit-back-to-what-the-crm-holds-writes-nothing",
    ),
]


def _check_history(decision: Decision, want: Move | object | None) -> None:
    got = decision.transition
    if want is ANY:
        return
    if want is None:
        assert got is None, f"expected no history entry, got {got}"
        return
    assert isinstance(want, Move)
    assert got is not None, f"expected {want}, got no history entry"
    assert (got.from_stage, got.to_stage, got.suppressed) == (want.from_stage, want.to_stage, want.suppressed)
    if want.suppressed:
        assert got.reason, "every suppression is recorded with its reason"
        assert want.reason is not None and want.reason in got.reason, got.reason
    if want.rule is not ANY:
        assert got.rule == want.rule
    if want.cause is not ANY:
        assert got.cause == want.cause
    if want.at is not ANY:
        assert got.at == want.at


@pytest.mark.parametrize("case", CASES)
def test_rule(case: Case, mappings: dict[str, StageMapping]) -> None:
    decision = case.decide(case.before, mappings[case.mapping])
    after = decision.state
    for name in CONTRACT_FIELDS:
        want = case.after.get(name, getattr(case.before, name))
        if want is not ANY:
            assert getattr(after, name) == want, f"{name}: {getattr(after, name)!r} != {want!r}"
    _check_history(decision, case.history)
    if case.writeback is not ANY:
        assert decision.writeback == case.writeback
    if case.cancel is not ANY:
        assert decision.cancel_writeback == case.cancel


# --- sequences: what a single row cannot show ----------------------------------------------------
def test_unmapped_then_mapped_status_clears_quarantine(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    first = rules.on_status(state("Working"), "Recycled", m, T0 + DAY)
    assert (first.state.stage, first.state.quarantined) == ("Working", "Recycled")
    again = rules.on_status(first.state, "Recycled", m, T0 + 2 * DAY)
    assert again.transition is None and again.state == first.state  # read again: an echo
    cleared = rules.on_status(first.state, "Closed Won", m, T0 + 3 * DAY)
    assert (cleared.state.stage, cleared.state.quarantined, cleared.state.set_by) == ("Won", None, SetBy.EXTERNAL)


def test_written_status_reads_back_as_an_echo(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    moved = rules.on_activity(state("New"), "email_replied", m, T0 + DAY)
    assert moved.writeback == "Contacted"
    before = moved.state
    confirmed = rules.written(before, "Contacted")
    assert confirmed == replace(before, remote_status="Contacted")
    echo = rules.on_status(confirmed, "Contacted", m, T0 + 2 * DAY)
    assert echo.state == confirmed and not echo.changed


def test_inactive_suppression_is_recorded_once(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    first = rules.on_time(state("Meeting Set", SetBy.MANUAL), m, T0 + 8 * DAY)
    assert first.transition is not None and first.transition.suppressed and "sticky" in (first.transition.reason or "")
    for later in (T0 + 8 * DAY, T0 + 9 * DAY, T0 + 100 * DAY):
        again = rules.on_time(first.state, m, later)
        assert again.transition is None, "a timer running every few minutes records the suppression once"
        assert again.state.stage == "Meeting Set"
    # New activity starts a new inactivity period: its end is decided (and recorded) again, once.
    touched = rules.on_activity(first.state, "call_logged", m, T0 + 10 * DAY)
    assert touched.transition is None
    assert rules.on_time(touched.state, m, T0 + 16 * DAY).transition is None
    second = rules.on_time(touched.state, m, T0 + 17 * DAY)
    assert second.transition is not None and second.transition.suppressed
    assert rules.on_time(second.state, m, T0 + 18 * DAY).transition is None


def test_inactive_backwards_suppression_is_recorded_once(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    first = rules.on_time(state("Qualified"), m, T0 + 10 * DAY)
    assert first.transition is not None and first.transition.suppressed
    assert rules.on_time(first.state, m, T0 + 11 * DAY).transition is None


def test_inactive_move_is_not_repeated(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    moved = rules.on_time(state("Working"), m, T0 + 14 * DAY)
    assert moved.state.stage == "Unresponsive"
    again = rules.on_time(moved.state, m, T0 + 60 * DAY)
    assert again.transition is None and again.state.stage == "Unresponsive"


def test_unlock_lets_triggers_apply_again(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    locked = rules.manual_set(state("Working"), "Meeting Set", m, T0 + DAY, SetBy.MANUAL).state
    suppressed = rules.on_activity(locked, "email_replied", m, T0 + 2 * DAY)
    assert suppressed.transition is not None and suppressed.transition.suppressed
    assert suppressed.state.stage == "Meeting Set"
    unlocked = rules.unlock(suppressed.state, T0 + 3 * DAY).state
    assert unlocked.set_by is SetBy.TRIGGER and unlocked.stage == "Meeting Set"
    moved = rules.on_activity(unlocked, "email_replied", m, T0 + 4 * DAY)
    assert moved.state.stage == "Won" and moved.state.set_by is SetBy.TRIGGER
    assert moved.writeback == "Closed Won"


def test_external_status_locks_a_sticky_stage_again(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    unlocked = state("Meeting Set", SetBy.TRIGGER, remote_status="Qualified")
    relocked = rules.on_status(unlocked, "Meeting", m, T0 + DAY).state
    assert relocked.set_by is SetBy.EXTERNAL
    blocked = rules.on_activity(relocked, "email_replied", m, T0 + 2 * DAY)
    assert blocked.transition is not None and blocked.transition.suppressed


@pytest.mark.parametrize(
    ("before", "deadline"),
    [
        pytest.param(state("Working"), T0 + 14 * DAY, id="from-stage-entry"),
        pytest.param(state("Working", activity=T0 + 3 * DAY), T0 + 17 * DAY, id="from-last-activity"),
        pytest.param(state("Working", entered=T0 + 5 * DAY, activity=T0 + 3 * DAY), T0 + 19 * DAY, id="from-the-later"),
        pytest.param(state("New"), T0 + 30 * DAY, id="the-stage's-own-trigger"),
        pytest.param(state("Meeting Set", SetBy.MANUAL), T0 + 7 * DAY, id="suppressed-trigger-still-due"),
        pytest.param(state("Won"), None, id="no-inactive-trigger"),
        pytest.param(state(None, None, remote_status="X", entered=None, quarantined="X"), None, id="no-stage"),
        pytest.param(state("Working", entered=None), None, id="no-instant-at-all"),
    ],
)
def test_next_inactive_deadline(
    before: RecordState, deadline: datetime | None, mappings: dict[str, StageMapping]
) -> None:
    m = mappings["fwd"]
    assert rules.next_inactive_deadline(before, m) == deadline
    if deadline is not None and before.stage == "Working":
        # The deadline is exactly where on_time starts to move.
        assert rules.on_time(before, m, deadline - timedelta(microseconds=1)).transition is None
        assert rules.on_time(before, m, deadline).transition is not None


def test_decisions_are_pure(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    before = state("New")
    one = rules.on_activity(before, "email_replied", m, T0 + DAY)
    two = rules.on_activity(before, "email_replied", m, T0 + DAY)
    assert one == two
    assert before == state("New")


@pytest.mark.parametrize(
    "decide",
    [
        pytest.param(event("email_replied"), id="trigger"),
        pytest.param(manual("Working"), id="manual"),
    ],
)
def test_move_back_to_what_the_crm_holds_replaces_the_pending_writeback(
    decide: Decide, mappings: dict[str, StageMapping]
) -> None:
    # A manual set to New queued `Open`; the CRM still holds `Contacted` (not written yet).
    m = mappings["fwd"]
    pending_open = rules.manual_set(state("Working"), "New", m, T0, SetBy.MANUAL)
    assert pending_open.writeback == "Open"
    unlocked = rules.unlock(pending_open.state, T0).state
    decision = decide(unlocked, m)
    assert decision.state.stage == "Working"
    # Either queue Working's status (it replaces `Open`) or cancel the pending `Open`.
    assert decision.writeback == "Contacted" or decision.cancel_writeback


# --- contract disagreements ----------------------------------------------------------------------
# A deliberate extension of the contract: a quarantined record holds a status a person set in the CRM
# that the mapping does not know. A trigger moving it would write our status over theirs, which the
# contract forbids elsewhere ("a human's change is never overwritten"); so the trigger is held back,
# with a reason `explain` shows, until a mapped status arrives.
@pytest.mark.parametrize(
    ("fn", "target"),
    [
        pytest.param(event("email_replied"), "Working", id="activity"),
        pytest.param(timer(T0 + 30 * DAY), "Working", id="inactive"),
    ],
)
def test_trigger_on_a_quarantined_record_is_held_back(
    fn: Decide, target: str,
    mappings: dict[str, StageMapping],
) -> None:
    quarantined = state("New", remote_status="Recycled", quarantined="Recycled")
    decision = fn(quarantined, mappings["fwd"])
    assert decision.state.stage == "New"
    assert decision.writeback is None
    assert decision.transition is not None and decision.transition.suppressed
    assert decision.transition.to_stage == target
    assert (decision.transition.reason or "").startswith("quarantined: the CRM status 'Recycled'")


# --- rule 4: the first sync is a baseline; rule 5: a stale read changes nothing -------------------
B = datetime(2026, 6, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("created", "modified", "enroll", "changed", "expected"),
    [
        pytest.param(B - 90 * DAY, B - 30 * DAY, False, None, B, id="existing-record-enters-at-baseline"),
        pytest.param(None, B - 30 * DAY, False, None, B, id="no-create-date-modified-before-baseline"),
        pytest.param(B, B, False, None, B, id="created-at-the-baseline-instant-existed"),
        pytest.param(B + HOUR, B + 2 * HOUR, False, None, B + HOUR, id="created-after-baseline-starts-at-creation"),
        pytest.param(B + HOUR, B + 2 * HOUR, True, B - DAY, B + HOUR, id="created-after-baseline-ignores-enroll"),
        pytest.param(None, B + 2 * HOUR, False, None, B + 2 * HOUR, id="no-create-date-modified-after-baseline"),
        pytest.param(B - 90 * DAY, B - 30 * DAY, True, None, B - 30 * DAY, id="enroll-without-history-modified"),
        pytest.param(B - 90 * DAY, B - 30 * DAY, True, B - 60 * DAY, B - 60 * DAY, id="enroll-with-status-history"),
        pytest.param(B - 90 * DAY, B + HOUR, False, None, B, id="existing-record-edited-since-baseline"),
    ],
)
def test_first_seen_at(
    created: datetime | None, modified: datetime, enroll: bool, changed: datetime | None, expected: datetime
) -> None:
    got = rules.first_seen_at(B, created, modified, enroll_existing=enroll, status_changed_at=changed)
    assert got == expected


@pytest.mark.parametrize(
    ("known", "read", "stale"),
    [
        (None, B, False),  # nothing known yet
        (B, B - timedelta(seconds=1), True),  # a lagging index shows an older version
        (B, B, False),  # the same second: a person's edit beside our write still counts
        (B, B + timedelta(seconds=1), False),
    ],
)
def test_is_stale(known: datetime | None, read: datetime, stale: bool) -> None:
    assert rules.is_stale(known, read) is stale


def test_criteria_fire_again_after_being_false(mappings: dict[str, StageMapping]) -> None:
    """Above, below, above again: the condition became true twice, so the trigger fires twice."""
    m = mappings["crit-free"]
    moved = rules.on_fields(state("Working", SetBy.TRIGGER), {"Score": 10}, {"Score": 60}, m, AT)
    assert moved.state.stage == "Qualified"
    back = rules.on_fields(moved.state, {"Score": 60}, {"Score": 5}, m, AT + DAY)  # cold: Qualified -> Working
    assert back.state.stage == "Working"
    again = rules.on_fields(back.state, {"Score": 5}, {"Score": 60}, m, AT + 2 * DAY)
    assert again.state.stage == "Qualified" and again.transition is not None
    assert again.transition.detail == "Score 5 -> 60 (gte 50)"
    stays = rules.on_fields(again.state, {"Score": 60}, {"Score": 65}, m, AT + 3 * DAY)
    assert stays.transition is None and stays.state == again.state


def test_criteria_after_a_status_read_act_from_the_new_stage(mappings: dict[str, StageMapping]) -> None:
    """Rule 1 first, then the criteria from the stage the status put the record in."""
    m = mappings["crit"]
    read = rules.on_status(state("Qualified"), "Contacted", m, AT)
    assert read.state.stage == "Working"
    moved = rules.on_fields(read.state, {"Score": 10}, {"Score": 70}, m, AT)
    assert moved.state.stage == "Qualified" and moved.writeback == "Qualified"


def test_criteria_detail_is_bounded_and_printable(mappings: dict[str, StageMapping]) -> None:
    m = mappings["crit"]
    hostile = "Gold" + "\x1b[31m" + "x" * 5000
    decision = rules.on_fields(state("Working"), {"Tier": None}, {"Tier": hostile}, m, AT)
    assert decision.transition is None  # not in the list: a hostile value only ever compares false
    decision = rules.on_fields(state("Working"), {"Score": "\x1b[2J" + "9" * 60}, {"Score": 55}, m, AT)
    assert decision.transition is not None
    detail = decision.transition.detail
    assert "\x1b" not in detail and len(detail) < 120
    assert rules.on_fields(state("New"), None, {"Score": 70}, m, AT, first_read=True).transition.detail == (  # type: ignore[union-attr]
        "Score (first read) -> 70 (gte 50)"
    )


def test_activity_before_the_baseline_only_counts_as_activity(mappings: dict[str, StageMapping]) -> None:
    m = mappings["fwd"]
    start = state("New", entered=B)
    old = rules.on_activity(start, "email_replied", m, B - DAY, baseline=B)
    assert old.state == replace(start, last_activity_at=B - DAY) and old.transition is None
    assert old.writeback is None and not old.changed
    # The same reply dated at or after the baseline moves the record as usual.
    for at in (B, B + DAY):
        moved = rules.on_activity(start, "email_replied", m, at, baseline=B)
        assert moved.state.stage == "Working" and moved.writeback == "Contacted"
    # Old activity still pushes the inactivity clock of a record that was idle.
    idle = state("Working", entered=B - 30 * DAY)
    touched = rules.on_activity(idle, "call_logged", m, B - DAY, baseline=B)
    assert touched.state.inactive_since() == B - DAY
