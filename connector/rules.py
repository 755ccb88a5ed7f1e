"""The rule semantics of the design, as pure functions: (record state, event, mapping) -> Decision.

No I/O and no clock: every instant comes in as an argument, so the same inputs always give the same
decision, and `explain` can show exactly why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from connector import criteria
from connector.mapping import ActivityTrigger, Category, CriteriaTrigger, InactiveTrigger, StageMapping

TriggerRule = ActivityTrigger | InactiveTrigger | CriteriaTrigger


class SetBy(StrEnum):
    EXTERNAL = "external"
    MANUAL = "manual"
    IMPORT = "import"
    TRIGGER = "trigger"
    RESYNC = "resync"


# Who may hold a sticky stage against triggers (rule 2b).
LOCKING = frozenset({SetBy.EXTERNAL, SetBy.MANUAL, SetBy.IMPORT})


class Cause(StrEnum):
    EXTERNAL = "external"  # a status read from the CRM
    EVENT = "event"  # an activity event
    INACTIVE = "inactive"  # the time event
    CRITERIA = "criteria"  # the record's fields came to satisfy a criteria trigger's condition
    MANUAL = "manual"
    IMPORT = "import"
    UNLOCK = "unlock"
    RESYNC = "resync"
    CONFLICT = "conflict"  # a person changed the CRM while our write-back waited


@dataclass(frozen=True)
class RecordState:
    stage: str | None = None  # None: never seen with a mapped status
    set_by: SetBy | None = None
    remote_status: str | None = None
    stage_entered_at: datetime | None = None
    last_activity_at: datetime | None = None
    quarantined: str | None = None  # the unmapped CRM status that put it there
    # The inactivity anchor whose `inactive` trigger was already decided, so a timer that runs every
    # few minutes records a suppression once, not on every run.
    inactive_decided_at: datetime | None = None

    @property
    def known(self) -> bool:
        return self.stage is not None

    def locked(self, mapping: StageMapping) -> bool:
        return (
            self.stage is not None
            and mapping.has_stage(self.stage)
            and mapping.stage(self.stage).sticky
            and self.set_by in LOCKING
        )

    def inactive_since(self) -> datetime | None:
        activity, entered = self.last_activity_at, self.stage_entered_at
        if activity is None or entered is None:
            return entered if activity is None else activity
        return max(activity, entered)


@dataclass(frozen=True)
class Transition:
    """One history entry: a move, or a decision not to move and why."""

    at: datetime
    from_stage: str | None
    to_stage: str | None
    cause: Cause
    detail: str  # the status read, the event type, the user's note
    rule: str | None = None  # the trigger's name
    suppressed: bool = False
    reason: str | None = None
    owner: str | None = None  # the stage owner assigned by this move


@dataclass(frozen=True)
class Decision:
    state: RecordState
    transition: Transition | None = None
    writeback: str | None = None  # a status to queue for the CRM
    cancel_writeback: bool = False  # a pending write-back is now stale and must not be sent

    @property
    def changed(self) -> bool:
        return self.transition is not None or self.writeback is not None or self.cancel_writeback


# --- rule 1: a status read from the CRM ----------------------------------------------------------
def on_status(state: RecordState, status: str, mapping: StageMapping, at: datetime) -> Decision:
    if status == state.remote_status:
        return Decision(state)  # our own write-back coming back, or nothing new
    target = mapping.stage_for_status(status)
    if target is None:
        new = replace(state, remote_status=status, quarantined=status)
        reason = f"status '{status}' is not in the mapping; quarantined"
        return Decision(
            new,
            Transition(at, state.stage, state.stage, Cause.EXTERNAL, status, suppressed=True, reason=reason),
            cancel_writeback=True,
        )
    if target == state.stage:
        # The CRM agrees with our stage (perhaps a person set it too): it now holds it, as external.
        held = replace(state, remote_status=status, quarantined=None, set_by=SetBy.EXTERNAL)
        return Decision(held, cancel_writeback=True)
    # One `replace` for the whole move: this runs for every record of a first sync.
    new = replace(
        state, remote_status=status, quarantined=None, set_by=SetBy.EXTERNAL, stage=target, stage_entered_at=at,
        inactive_decided_at=None,
    )
    return Decision(new, Transition(at, state.stage, target, Cause.EXTERNAL, status), cancel_writeback=True)


# --- rule 4: the first sync is a baseline; rule 5: a stale read changes nothing -------------------
def first_seen_at(
    baseline: datetime,
    created_at: datetime | None,
    modified_at: datetime,
    *,
    enroll_existing: bool = False,
    status_changed_at: datetime | None = None,
) -> datetime:
    """When the stage clock of a record the store has not seen before starts.

    A record that existed at the object's baseline B enters its stage at B, so that nothing it did
    before the connector arrived moves it; with `enroll_existing` its clock starts from the CRM's own
    dates instead (when the status last changed, else when the record was last modified). A record
    created after B starts at its creation, however late a pull sees it.
    """
    born = created_at or modified_at
    if born > baseline:
        return born
    if enroll_existing:
        return status_changed_at or modified_at
    return baseline


def is_stale(known: datetime | None, read: datetime) -> bool:
    """A read older than what the store already knows of the record (a lagging index or replica).

    The same stamp is not stale: Salesforce stamps to the second, so a person's edit in the same
    second as our write must still count.
    """
    return known is not None and read < known


# --- rule 2: activity and time events ------------------------------------------------------------
def on_activity(
    state: RecordState, event: str, mapping: StageMapping, at: datetime, baseline: datetime | None = None
) -> Decision:
    """An activity event dated `at`. Activity dated before the object's `baseline` (rule 4) only
    counts as activity: rules act on what happens from the first sync on, never on old history."""
    last = state.last_activity_at
    touched = replace(state, last_activity_at=at if last is None or at > last else last)
    if baseline is not None and at < baseline:
        return Decision(touched)
    trigger = _first_trigger(state, mapping, event)
    if trigger is None:
        return Decision(touched)
    return _apply_trigger(touched, trigger, mapping, at, Cause.EVENT, event)


def on_time(state: RecordState, mapping: StageMapping, now: datetime) -> Decision:
    """The `inactive` time event, as of `now`: the first inactive trigger whose time has come."""
    since = state.inactive_since()
    if since is None or state.stage is None or state.inactive_decided_at == since:
        return Decision(state)
    category = mapping.category(state.stage) if mapping.has_stage(state.stage) else None
    for trigger in mapping.triggers:
        if not isinstance(trigger, InactiveTrigger) or category is None:
            continue
        if trigger.applies_from(state.stage, category) and now - since >= trigger.after:
            decided = replace(state, inactive_decided_at=since)
            # The move happens when the inactivity period ran out, not whenever the timer ran.
            return _apply_trigger(decided, trigger, mapping, since + trigger.after, Cause.INACTIVE, "inactive")
    return Decision(state)


# --- rule 2 with criteria: a condition on the fields read with the record ------------------------
def on_fields(
    state: RecordState,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    mapping: StageMapping,
    at: datetime,
    *,
    first_read: bool = False,
) -> Decision:
    """The first criteria trigger whose condition is true of `after` and was not of `before`.

    `before` is the fields of the previous read (None: the store has none). A condition fires when it
    *becomes* true: not again on every read while it stays true, again after it was false in between.
    A field the previous read did not carry (the trigger is newer than that read) has no "before":
    its condition does not fire until it has been read false once, so adding a trigger does not
    move every record that already meets it. `first_read` (a record created after the baseline, or
    `enroll_existing`) judges the first read against nothing: a condition true at creation fires.
    """
    checks = mapping.criteria_checks
    if not checks or state.stage is None or not mapping.has_stage(state.stage):
        return Decision(state)
    category = mapping.category(state.stage)
    for trigger, check in checks:
        if not trigger.applies_from(state.stage, category) or not criteria.holds(check, after):
            continue
        known = before is not None and check.field in before
        if not first_read and (not known or criteria.holds(check, before or {})):
            continue
        detail = criteria.describe(trigger.on, None if first_read else before, after)
        return _apply_trigger(state, trigger, mapping, at, Cause.CRITERIA, detail)
    return Decision(state)


def next_inactive_deadline(state: RecordState, mapping: StageMapping) -> datetime | None:
    """When the next `inactive` trigger for this record's stage comes due, for the timer's query."""
    since = state.inactive_since()
    if since is None or state.stage is None or not mapping.has_stage(state.stage):
        return None
    category = mapping.category(state.stage)
    deadlines = [
        since + t.after
        for t in mapping.triggers
        if isinstance(t, InactiveTrigger) and t.applies_from(state.stage, category)
    ]
    return min(deadlines) if deadlines else None


def _first_trigger(state: RecordState, mapping: StageMapping, event: str) -> TriggerRule | None:
    if state.stage is None or not mapping.has_stage(state.stage):
        return None
    category = mapping.category(state.stage)
    for trigger in mapping.triggers:
        if isinstance(trigger, CriteriaTrigger):
            continue
        if trigger.on == event and trigger.applies_from(state.stage, category):
            return trigger
    return None


def _apply_trigger(
    state: RecordState, trigger: TriggerRule, mapping: StageMapping, at: datetime, cause: Cause, detail: str
) -> Decision:
    current = state.stage
    assert current is not None
    target = trigger.to

    def suppressed(reason: str) -> Decision:
        return Decision(
            state, Transition(at, current, target, cause, detail, trigger.name, suppressed=True, reason=reason)
        )

    if target == current:  # a
        return Decision(state)
    if state.quarantined is not None:
        # A person set a status we do not map; writing ours would overwrite theirs.
        return suppressed(f"quarantined: the CRM status '{state.quarantined}' is not in the mapping")
    if state.locked(mapping):  # b
        return suppressed(f"{state.set_by} set; sticky")
    current_category = mapping.category(current)
    if current_category is Category.NOT_SUCCEEDED and not trigger.reactivate:  # c
        return suppressed("in a not-succeeded stage; the trigger does not reactivate")
    target_category = mapping.category(target)
    if (
        mapping.forward_only
        and Category.NOT_SUCCEEDED not in (current_category, target_category)
        and mapping.index(target) < mapping.index(current)
    ):  # d
        return suppressed("would move backwards")
    moved = replace(state, stage=target, set_by=SetBy.TRIGGER, stage_entered_at=at, inactive_decided_at=None)
    writeback = _writeback(moved, mapping)
    # Back to the status the CRM holds: nothing to send, and a pending write of another status is stale.
    return Decision(
        moved,
        Transition(at, current, target, cause, detail, trigger.name),
        writeback=writeback,
        cancel_writeback=writeback is None,
    )


def _writeback(state: RecordState, mapping: StageMapping) -> str | None:
    assert state.stage is not None
    status = mapping.status_for_stage(state.stage)
    return None if status == state.remote_status else status


# --- rule 3: by hand -----------------------------------------------------------------------------
def manual_set(
    state: RecordState, stage: str, mapping: StageMapping, at: datetime, by: SetBy, note: str = ""
) -> Decision:
    """A stage set by a person (`stage set`, CSV import): always applies and queues the write-back."""
    cause = Cause.IMPORT if by is SetBy.IMPORT else Cause.MANUAL
    entered = state.stage_entered_at if stage == state.stage else at
    new = replace(state, stage=stage, set_by=by, stage_entered_at=entered, quarantined=None)
    if stage != state.stage:
        new = replace(new, inactive_decided_at=None)
    transition = Transition(at, state.stage, stage, cause, note or by.value)
    writeback = _writeback(new, mapping)
    return Decision(new, transition, writeback=writeback, cancel_writeback=writeback is None)


def unlock(state: RecordState, at: datetime) -> Decision:
    """`stage unlock`: triggers apply again."""
    new = replace(state, set_by=SetBy.TRIGGER)
    return Decision(new, Transition(at, state.stage, state.stage, Cause.UNLOCK, f"was set by {state.set_by}"))


def remap(state: RecordState, mapping: StageMapping, at: datetime) -> Decision:
    """After a mapping change (`resync --remap`): the stage follows the CRM status under the new table."""
    if state.remote_status is None:
        return Decision(state)
    target = mapping.stage_for_status(state.remote_status)
    if target is None:
        if state.quarantined == state.remote_status:
            return Decision(state)
        reason = f"status '{state.remote_status}' is not in the mapping; quarantined"
        return Decision(
            replace(state, quarantined=state.remote_status),
            Transition(at, state.stage, state.stage, Cause.RESYNC, state.remote_status, suppressed=True, reason=reason),
        )
    if target == state.stage and state.quarantined is None:
        return Decision(state)
    new = replace(state, stage=target, set_by=SetBy.RESYNC, quarantined=None)
    if target != state.stage:
        new = replace(new, stage_entered_at=at, inactive_decided_at=None)
    return Decision(new, Transition(at, state.stage, target, Cause.RESYNC, state.remote_status))


def written(state: RecordState, status: str) -> RecordState:
    """The CRM confirmed our write: it now holds `status`, so reading it back is not a change."""
    return replace(state, remote_status=status)
