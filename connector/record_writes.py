"""How a read from the CRM, or a rule's decision, becomes one record's write to the store.

Shared by the engine (pages, events, timers, manual sets), the outbox drain (confirmations and
conflicts) and resync; pure apart from the store's data types, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal, NamedTuple

from connector import rules
from connector.mapping import InactiveTrigger, StageMapping
from connector.rules import Cause, Decision, RecordState, Transition
from connector.sources.base import RemoteRecord
from connector.store import repo


def next_timer_at(state: RecordState, mapping: StageMapping) -> datetime | None:
    """When the timer job must look at this record again (None: nothing pending).

    `rules.next_inactive_deadline`, from a per-stage table: this runs for every record written.
    """
    return _timer(mapping, state.stage, state.last_activity_at, state.stage_entered_at, state.inactive_decided_at)


def _timer(
    mapping: StageMapping,
    stage: str | None,
    activity: datetime | None,
    entered: datetime | None,
    decided: datetime | None,
) -> datetime | None:
    since = entered if activity is None else activity if entered is None or activity > entered else entered
    if since is None or stage is None or (decided is not None and decided == since):
        return None
    after = _shortest_after(mapping).get(stage)
    return None if after is None else since + after


class _StageTable(NamedTuple):
    """What every record's write asks of its mapping, worked out once per mapping."""

    afters: dict[str, timedelta]  # stage -> the shortest `after` of the inactive triggers that apply from it
    owners: bool  # some stage has an `owner` or `assign:` rules
    # (status, stage clock start) -> rule 1's decision for a record new to the store, and its timer: a
    # first sync decides the same thing for every record with one status and one clock start (the
    # baseline), so each is decided once. Both are pure functions of the key and the (frozen) mapping.
    first_reads: dict[tuple[str, datetime, tzinfo | None], tuple[Decision, datetime | None]]


# mapping id -> (the mapping, its table). Mappings are frozen; a reloaded config brings new ones.
_TABLES: dict[int, tuple[StageMapping, _StageTable]] = {}


def _stage_table(mapping: StageMapping) -> _StageTable:
    entry = _TABLES.get(id(mapping))
    if entry is None or entry[0] is not mapping:
        if len(_TABLES) >= 64:  # mappings are few; a test run builds many
            _TABLES.clear()
        afters: dict[str, timedelta] = {}
        for stage in mapping.stages:
            found = [
                t.after for t in mapping.triggers
                if isinstance(t, InactiveTrigger) and t.applies_from(stage.name, stage.category)
            ]
            if found:
                afters[stage.name] = min(found)
        owners = any(stage.owner is not None or stage.assign for stage in mapping.stages)
        entry = _TABLES[id(mapping)] = (mapping, _StageTable(afters, owners, {}))
    return entry[1]


def _shortest_after(mapping: StageMapping) -> dict[str, timedelta]:
    """Per stage, what `rules.next_inactive_deadline` adds to the inactivity anchor (min over its triggers)."""
    return _stage_table(mapping).afters


def assign_owner(write: repo.RecordWrite, mapping: StageMapping) -> None:
    """On entering a stage with an owner (or `assign:` rules), write the owner back with the status."""
    if not _stage_table(mapping).owners:
        return  # no stage assigns owners: the usual mapping, and every record of a first sync comes here
    moves = [t for t in write.transitions if not t.suppressed and t.to_stage and t.to_stage != t.from_stage]
    if not moves or write.deleted or write.converted or not mapping.has_stage(moves[-1].to_stage or ""):
        return
    stage = mapping.stage(moves[-1].to_stage or "")
    fields = {k: None if v is None else str(v) for k, v in (write.fields or {}).items()}
    owner = stage.owner or next((rule.owner for rule in stage.assign if rule.matches(fields)), None)
    if owner is None or owner == write.owner:
        return
    write.owner = write.assigned_owner = owner
    write.transitions[write.transitions.index(moves[-1])] = replace(moves[-1], owner=owner)
    if write.writeback is None:
        # An external move needs no status write, but the new owner still has to reach the CRM.
        write.writeback = write.state.remote_status or mapping.status_for_stage(stage.name)


def write_for(
    stored: repo.StoredRecord | None, external_id: str, decision: Decision, mapping: StageMapping
) -> repo.RecordWrite:
    write = plain_write(stored, external_id, decision, mapping)
    assign_owner(write, mapping)
    return write


def plain_write(
    stored: repo.StoredRecord | None, external_id: str, decision: Decision, mapping: StageMapping
) -> repo.RecordWrite:
    return repo.RecordWrite(
        external_id=external_id,
        record_id=stored.id if stored else None,
        state=decision.state,
        transitions=[decision.transition] if decision.transition else [],
        writeback=decision.writeback,
        cancel_writeback=decision.cancel_writeback,
        next_timer_at=next_timer_at(decision.state, mapping),
        owner=stored.owner if stored else None,
        fields=stored.fields if stored else None,
        deleted=stored.deleted if stored else False,
        converted=stored.converted if stored else False,
        remote_modified_at=stored.remote_modified_at if stored else None,
        merged_into=stored.merged_into if stored else None,
    )


_NEW = RecordState()  # the state of a record the store has not seen (frozen: shared)


def decide_remote(
    stored: repo.StoredRecord | None,
    remote: RemoteRecord,
    mapping: StageMapping,
    first_seen: datetime | None = None,
    *,
    fires_at_first_read: bool = False,
) -> repo.RecordWrite | None:
    """What a record read from the CRM changes in the store, or None when nothing does.

    `first_seen` is when the stage clock of a record new to the store starts (`rules.first_seen_at`);
    without it, the read's modified stamp. `fires_at_first_read`: a record new to the store whose
    criteria conditions count as becoming true now (created after the baseline, or `enroll_existing`).
    """
    if stored is None and not remote.deleted:
        return _decide_new(remote, mapping, first_seen, fires_at_first_read)
    return _decide_read(stored, remote, mapping, first_seen, fires_at_first_read)


_FIRST_READS_KEPT = 4096  # records created after the baseline each start their own clock: bounded


def _decide_new(
    remote: RemoteRecord, mapping: StageMapping, first_seen: datetime | None, fires_at_first_read: bool
) -> repo.RecordWrite:
    """`_decide_read` for a record new to the store, not deleted: every record of a first sync comes here.

    The same rules in the same order (tests/test_decide_new.py holds the two to the same writes); what
    the general path works out per record and is the same for all (rule 1's decision from the empty
    state, its timer) is looked up, and a mapping without criteria triggers skips them.
    """
    at = remote.modified_at
    entered = at if first_seen is None else first_seen
    status = remote.status or ""
    table = _stage_table(mapping)
    # The zone too: equal instants in two zones are one key, and the decision carries the instant as given.
    key = (status, entered, entered.tzinfo)
    known = table.first_reads.get(key)
    if known is None:
        if len(table.first_reads) >= _FIRST_READS_KEPT:
            table.first_reads.clear()
        decision = rules.on_status(_NEW, status, mapping, entered)
        known = table.first_reads[key] = (decision, next_timer_at(decision.state, mapping))
    decision, timer = known
    fields = dict(remote.fields) or None
    write = repo.RecordWrite(
        remote.id,
        None,
        decision.state,
        transitions=[decision.transition] if decision.transition else [],
        writeback=decision.writeback,
        cancel_writeback=decision.cancel_writeback,
        next_timer_at=timer,
        owner=remote.owner,
        fields=fields,
        converted=remote.converted,
        remote_modified_at=at,
    )
    if mapping.criteria_checks:  # without any, `rules.on_fields` decides nothing
        criteria = rules.on_fields(
            decision.state, None, remote.fields, mapping, max(entered, at), first_read=fires_at_first_read
        )
        if criteria.changed or criteria.state != decision.state:
            fold(write, criteria, mapping)
    if table.owners:
        assign_owner(write, mapping)
    if remote.converted:
        # A converted lead is read-only in Salesforce: never queue a write for it.
        write.writeback, write.cancel_writeback = None, True
    return write


def _decide_read(
    stored: repo.StoredRecord | None,
    remote: RemoteRecord,
    mapping: StageMapping,
    first_seen: datetime | None,
    fires_at_first_read: bool,
) -> repo.RecordWrite | None:
    """`decide_remote` in general: any stored record (or none), any read."""
    if stored is not None and rules.is_stale(stored.remote_modified_at, remote.modified_at):
        return None  # rule 5: a lagging index or replica, neither a person's change nor a conflict
    state = stored.state if stored else _NEW
    at = remote.modified_at
    if remote.deleted:
        if stored is not None and stored.deleted and stored.merged_into == remote.merged_into:
            return None
        detail, reason = "deleted", "deleted in the CRM; out of the funnel"
        if remote.merged_into:
            detail, reason = f"merged into {remote.merged_into}", f"merged into {remote.merged_into} in the CRM"
        gone = Transition(at, state.stage, None, Cause.EXTERNAL, detail, reason=reason)
        return repo.RecordWrite(
            remote.id,
            stored.id if stored else None,
            replace(state, remote_status=remote.status),
            transitions=[gone],
            cancel_writeback=True,
            deleted=True,
            owner=remote.owner,
            fields=dict(remote.fields) or None,
            remote_modified_at=at,
            converted=remote.converted,
            merged_into=remote.merged_into,
        )
    entered = first_seen if stored is None and first_seen is not None else at
    decision = rules.on_status(state, remote.status or "", mapping, entered)
    # Rule 1 first; then the criteria triggers, from the stage the status read left the record in.
    criteria = rules.on_fields(
        decision.state,
        stored.fields if stored is not None else None,
        remote.fields,
        mapping,
        max(entered, at),
        first_read=stored is None and fires_at_first_read,
    )
    fields = dict(remote.fields) or None
    unchanged_extras = stored is not None and (
        stored.owner == remote.owner
        and stored.fields == fields
        and stored.converted == remote.converted
        and not stored.deleted
    )
    changed = decision.changed or criteria.changed
    nothing_new = not changed and criteria.state == state and unchanged_extras
    if nothing_new and stored is not None and not _newer(remote.modified_at, stored.remote_modified_at):
        return None
    write = plain_write(stored, remote.id, decision, mapping)
    if criteria.changed or criteria.state != decision.state:
        fold(write, criteria, mapping)
    write.stamp_only = nothing_new
    write.owner, write.fields, write.converted, write.deleted = remote.owner, fields, remote.converted, False
    write.remote_modified_at = at
    assign_owner(write, mapping)
    if remote.converted:
        # A converted lead is read-only in Salesforce: never queue a write for it.
        write.writeback, write.cancel_writeback = None, True
    return write


def fold(write: repo.RecordWrite, decision: Decision, mapping: StageMapping) -> None:
    """Add a later decision about the same record to its write (a status read, then a criteria move;
    several events in one page)."""
    write.state = decision.state
    if decision.transition:
        write.transitions.append(decision.transition)
    if decision.writeback:
        write.writeback = decision.writeback
    elif decision.cancel_writeback:
        write.writeback = None  # a later decision made the status queued by an earlier one stale
    write.cancel_writeback = write.cancel_writeback or decision.cancel_writeback
    write.next_timer_at = next_timer_at(decision.state, mapping)


def _newer(read: datetime, known: datetime | None) -> bool:
    return known is None or read > known


def our_write(stored: repo.StoredRecord, remote: RemoteRecord, pending_status: str) -> bool:
    """The CRM holds the status our pending write-back carries, and the store does not know it yet."""
    return (
        not remote.deleted
        and not stored.deleted
        and remote.status == pending_status
        and remote.status != stored.state.remote_status
    )


def sent_landed(stored: repo.StoredRecord, remote: RemoteRecord, sent: set[str] | None) -> bool:
    """The CRM holds a status we sent and never heard back about (a kill between the two)."""
    return (
        bool(sent)
        and not remote.deleted
        and not stored.deleted
        and remote.status is not None
        and remote.status in (sent or ())
        and remote.status != stored.state.remote_status
    )


def resend_stage(
    write: repo.RecordWrite, mapping: StageMapping, *, pending: bool, dead: set[str] | None = None
) -> None:
    """After a write of ours is found landed for a record with nothing `pending`: queue the stage's status if
    the CRM holds another.

    A stage set since the kill whose status the store believed the CRM held queued nothing, so the CRM
    would keep our older status under a newer stage, and no later read would tell the two apart. A
    status the CRM refused (`dead`, dead-lettered) is not queued again: it waits for the admin, who
    re-queues it with `connector outbox`.
    """
    state = write.state
    if pending or write.writeback is not None or write.converted or write.deleted:
        return
    if state.stage is None or state.quarantined is not None or not mapping.has_stage(state.stage):
        return  # no stage, or one the mapping no longer has: no status of ours to send
    status = mapping.status_for_stage(state.stage)
    if status != state.remote_status and status not in (dead or ()):
        write.writeback, write.cancel_writeback = status, False


def traces_ended(
    stored: dict[str, repo.StoredRecord], reads: Sequence[RemoteRecord], sent: dict[int, set[str]]
) -> list[int]:
    """Records with a sent trace whose read, not stale (rule 5), shows another status than the stored one.

    Either it is ours found landed, or a person changed the record after what we sent: then a later read
    of a status we had sent is theirs too (rule 1), not our write landing. In both cases the CRM has told
    where the record stands.
    """
    ended = []
    for remote in reads:
        record = stored.get(remote.id)
        if (
            record is not None
            and record.id in sent
            and remote.status != record.state.remote_status
            and not rules.is_stale(record.remote_modified_at, remote.modified_at)
        ):
            ended.append(record.id)
    return ended


def read_back(
    row: tuple[Any, ...] | None, remote: RemoteRecord, mapping: StageMapping
) -> Literal["same", "stamp"] | None:
    """The common reads judged on the stored row as the driver returned it (`repo.ROW_COLUMNS`).

    "same": the read changes nothing; "stamp": only the CRM's modified stamp is newer (our own state
    read back), so only the stamp is written; None: anything else, which `decide_remote` decides. Both
    answers are exactly what `decide_remote` would conclude (it stays the judge): a read with the
    stored status, owner, fields and conversion, of a record not deleted, changes no stage, clock,
    history or outbox item. The stored timer is checked too: a write would recompute it, so where it
    would differ (the mapping's timers changed) the read goes the whole way.
    """
    if (
        row is None
        or remote.deleted
        or remote.converted
        or row[repo.R_DELETED]
        or row[repo.R_CONVERTED]
        or (remote.status or "") != (row[repo.R_REMOTE_STATUS] or "")
        or remote.owner != row[repo.R_OWNER]
    ):
        return None
    stored_fields = row[repo.R_FIELDS]
    if (stored_fields is not None or remote.fields) and repo.fields_of(stored_fields) != (dict(remote.fields) or None):
        return None
    known = repo.utc(row[repo.R_REMOTE_MODIFIED_AT])
    if known is not None and remote.modified_at <= known:
        return "same"  # not newer (or stale, rule 5): nothing to write
    if remote.status is None or remote.status != row[repo.R_REMOTE_STATUS]:
        return None  # no status read, or none stored: rule 1 decides
    timer = _timer(
        mapping,
        row[repo.R_STAGE],
        repo.utc(row[repo.R_ACTIVITY]),
        repo.utc(row[repo.R_ENTERED]),
        repo.utc(row[repo.R_DECIDED]),
    )
    return "stamp" if timer == repo.utc(row[repo.R_NEXT_TIMER_AT]) else None
