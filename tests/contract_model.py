"""A reference model of DESIGN.md's rules 1-5 and of the outbox, written from the contract, not from `connector`.

It holds each record as plain values and takes the same observations the engine and the drain were
given (the pages a pull delivered, the drain's conflict-check read and the CRM's answers to its
writes), applying its own reading of the rules to them. The stage tables come from
`tests/test_state_machine.py` (the mapping both models use).

Where the code deliberately goes beyond the contract's letter, the model follows it behind a
`KNOWN_*` switch and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connector.sources.base import RemoteEvent, RemoteRecord, StatusWrite
from tests.contract_crm import DrainCall
from tests.test_state_machine import (
    CATEGORY,
    FORWARD_ONLY,
    LOCKING,
    STAGE_OF,
    STAGES,
    STATUS_OF,
    STICKY,
    TRIGGERS,
    Trig,
)

# The code holds triggers back on a quarantined record (see test_rules.py); the contract is silent.
KNOWN_QUARANTINE_BLOCKS_TRIGGERS = True
# A pending write whose status the CRM turns out to hold is taken as ours having landed (its
# confirmation lost in a crash), not as a person's change: `set_by` stays (rule 1 literally: external).
KNOWN_LANDED_IS_OURS = True
# The same for a status we sent whose answer never came (a kill between the send and the confirmation)
# and whose item a newer one replaced or cancelled since: the CRM holding it is our write having landed,
# not a person's change. Rule 1 literally compares with `remote_status` only, which the confirmation that
# never came did not set. When nothing is pending after that read, the stage's own status goes out again,
# so the CRM does not keep our older status under a stage set since.
KNOWN_SENT_IS_OURS = True


MAX_ATTEMPTS = 8

# The criteria triggers of the contract test's mapping (tests/test_contract_model.py), as plain
# predicates on the one field they read, `Score` (a number or not set). A criteria trigger fires when
# its condition is true of the read just taken in and was not of the previous one taken in.
CRITERIA: list[tuple[Trig, Callable[[int | None], bool]]] = [
    (Trig("hot", "criteria", "Meeting Set", from_stages=("New", "Working")), lambda s: s is not None and s >= 50),
    (Trig("cold", "criteria", "Unresponsive", from_category=("in", "ok")), lambda s: s is not None and s < 10),
    (
        Trig("revived", "criteria", "Working", from_category=("not",), reactivate=True),
        lambda s: s is not None and s >= 30,
    ),
    (Trig("reset", "criteria", "New"), lambda s: s is None),
]

Entry = tuple[str | None, str | None, bool, str, str | None]  # from, to, suppressed, cause, status read


def retry_wait(attempts: int) -> timedelta:
    """The drain's backoff with its jitter pinned at the top (the test's rng), in seconds."""
    return timedelta(seconds=min(3600.0, 10.0 * 2**attempts))


@dataclass
class Rec:
    """One record as the contract says the store must hold it."""

    stage: str | None = None
    set_by: str | None = None
    remote: str | None = None
    quarantined: str | None = None
    entered: datetime | None = None
    activity: datetime | None = None
    decided: datetime | None = None  # the inactivity period whose end was already decided
    known: datetime | None = None  # the newest CRM stamp the store knows of (rule 5)
    pending: str | None = None
    sent: set[str] = field(default_factory=set)  # sent to the CRM, no answer for the record since
    attempts: int = 0
    due: datetime | None = None
    dead: int = 0
    dead_statuses: set[str] = field(default_factory=set)  # refused or out of attempts: for the admin
    history: list[Entry] = field(default_factory=list)
    score: int | None = None  # the field as the last read taken in had it
    score_read: bool = False  # whether any read was taken in (a "before" exists)

    def since(self) -> datetime | None:
        instants = [t for t in (self.activity, self.entered) if t is not None]
        return max(instants) if instants else None

    def learn(self, stamp: datetime | None) -> None:
        if stamp is not None and (self.known is None or stamp > self.known):
            self.known = stamp

    # rule 1
    def status_read(self, status: str, at: datetime) -> None:
        if status == self.remote:
            return
        self.sent.clear()  # a person's status, after whatever we sent: a later read of ours is theirs too
        self.remote = status
        self.pending = None  # the CRM is authoritative: a pending write would overwrite a person's change
        target = STAGE_OF.get(status)
        if target is None:
            self.quarantined = status
            self.history.append((self.stage, self.stage, True, "external", status))
            return
        self.quarantined = None
        self.set_by = "external"
        if target != self.stage:
            self.history.append((self.stage, target, False, "external", status))
            self.stage, self.entered, self.decided = target, at, None

    # criteria triggers: after rule 1, on the fields of every read taken in
    def fields_read(self, score: int | None, at: datetime, now: datetime, *, new_since_baseline: bool = False) -> None:
        before, had_before = self.score, self.score_read
        self.score, self.score_read = score, True
        if self.stage is None:
            return
        for trig, holds in CRITERIA:
            if not trig.applies(self.stage) or not holds(score):
                continue
            # Becoming true: false at the previous read, or the record did not exist at the baseline.
            if new_since_baseline or (had_before and not holds(before)):
                self.trigger(trig, at, "criteria", trig.name, now)
                return

    # rules 1 and 5, for a record a pull delivered
    def pulled(
        self,
        status: str,
        stamp: datetime,
        first_seen: datetime | None,
        score: int | None = None,
        now: datetime | None = None,
        new_since_baseline: bool = False,
    ) -> None:
        if self.known is not None and stamp < self.known:
            return  # rule 5: a lagging index or a late commit's older neighbour; not a change
        if KNOWN_LANDED_IS_OURS and self.pending is not None and status == self.pending != self.remote:
            self.remote, self.pending = status, None
            self.sent.clear()
            self.fields_read(score, stamp, now or stamp)
            self.learn(stamp)
            return
        if self.sent_landed(status):
            self.remote = status
            self.sent.clear()
            self.fields_read(score, stamp, now or stamp)
            self.learn(stamp)
            # A refused status waits for the admin, in the dead letters.
            if self.pending is None and self.stage is not None and self.quarantined is None and (
                STATUS_OF[self.stage] not in self.dead_statuses
            ):
                self.queue(STATUS_OF[self.stage], now or stamp)
            return
        self.status_read(status, first_seen or stamp)
        self.fields_read(score, max(first_seen or stamp, stamp), now or stamp, new_since_baseline=new_since_baseline)
        self.learn(stamp)

    def sent_landed(self, status: str) -> bool:
        return KNOWN_SENT_IS_OURS and status in self.sent and status != self.remote

    # rule 2
    def trigger(self, trig: Trig, at: datetime, cause: str, detail: str, now: datetime) -> None:
        current = self.stage
        assert current is not None
        target = trig.to
        if target == current:  # a
            return
        suppressed = (
            (KNOWN_QUARANTINE_BLOCKS_TRIGGERS and self.quarantined is not None)
            or (current in STICKY and self.set_by in LOCKING)  # b
            or (CATEGORY[current] == "not" and not trig.reactivate)  # c
            or (
                FORWARD_ONLY
                and "not" not in (CATEGORY[current], CATEGORY[target])
                and STAGES.index(target) < STAGES.index(current)
            )  # d
        )
        if suppressed:
            self.history.append((current, target, True, cause, None))
            return
        self.history.append((current, target, False, cause, None))  # e
        self.stage, self.set_by, self.entered, self.decided = target, "trigger", at, None
        self.queue(STATUS_OF[target], now)

    def queue(self, status: str, now: datetime) -> None:
        """At most one pending status per record; none when the CRM already holds it."""
        self.pending = status if status != self.remote else None
        self.attempts, self.due = 0, now

    def activity_event(self, event: str, at: datetime, baseline: datetime, now: datetime) -> None:
        if self.activity is None or at > self.activity:
            self.activity = at
        if self.stage is None or at < baseline:
            return  # rule 4: activity dated before the first sync only counts as activity
        for trig in TRIGGERS:
            if trig.on == event and trig.applies(self.stage):
                self.trigger(trig, at, "event", event, now)
                return

    def timers(self, now: datetime) -> None:
        for _ in range(10):
            since = self.since()
            if since is None or self.stage is None or self.decided == since:
                return
            for trig in TRIGGERS:
                if trig.after is not None and trig.applies(self.stage) and now - since >= trig.after:
                    self.decided = since
                    self.trigger(trig, since + trig.after, "inactive", "inactive", now)
                    break
            else:
                return

    # rule 3
    def manual(self, stage: str, by: str, now: datetime) -> None:
        self.history.append((self.stage, stage, False, by, None))
        if stage != self.stage:
            self.entered, self.decided = now, None
        self.stage, self.set_by = stage, by
        self.quarantined = None
        self.queue(STATUS_OF[stage], now)

    def dead_letter(self) -> None:
        assert self.pending is not None
        self.dead_statuses.add(self.pending)
        self.pending, self.dead = None, self.dead + 1

    def unlock(self) -> None:
        self.history.append((self.stage, self.stage, False, "unlock", None))
        self.set_by = "trigger"

    def retry(self, now: datetime) -> None:
        if self.attempts + 1 >= MAX_ATTEMPTS:
            self.dead_letter()
            return
        self.due = now + retry_wait(self.attempts)
        self.attempts += 1


@dataclass
class World:
    """Every record of the object, its baseline, and the activity already taken in."""

    records: dict[str, Rec] = field(default_factory=dict)
    baseline: datetime | None = None
    seen_keys: set[str] = field(default_factory=set)

    def take_records(self, pages: list[list[RemoteRecord]], now: datetime) -> None:
        for page in pages:
            if self.baseline is None:
                self.baseline = now  # rule 4: fixed by the object's first sync
            for remote in page:
                assert remote.status is not None
                rec = self.records.get(remote.id)
                first_seen, born_since = None, False
                if rec is None:
                    rec = self.records[remote.id] = Rec()
                    born = remote.created_at or remote.modified_at
                    born_since = born > self.baseline
                    first_seen = born if born_since else self.baseline
                score = remote.fields.get("Score")
                rec.pulled(remote.status, remote.modified_at, first_seen, score, now, born_since)

    def take_events(self, pages: list[list[RemoteEvent]], now: datetime) -> None:
        for page in pages:
            assert self.baseline is not None
            fresh = []
            for event in page:
                # Activity on a record no pull has shown yet is not taken in: the settle window reads it
                # again, and it counts once the record is known ("a pull sees them late", rule 4).
                if event.key not in self.seen_keys and event.record_id in self.records:
                    self.seen_keys.add(event.key)
                    fresh.append(event)
            for event in sorted(fresh, key=lambda e: (e.at, e.key)):
                self.records[event.record_id].activity_event(event.type, event.at, self.baseline, now)

    def due(self, now: datetime) -> list[str]:
        return sorted(rid for rid, r in self.records.items() if r.pending is not None and r.due and r.due <= now)

    def drain(self, calls: list[DrainCall], now: datetime) -> list[tuple[str, str]]:
        """The outbox drain over the due items, given what the CRM answered; returns the writes it must send."""
        due = self.due(now)
        if not due:
            assert calls == [], "the drain called the CRM with nothing due"
            return []
        assert len(calls) == 1, calls
        call = calls[0]
        if call.read_failed:
            return []  # nothing sent, nothing confirmed; the items stay as they were
        assert call.read is not None
        to_send = self._to_send(due, call)
        expected = [(rid, self.records[rid].pending or "") for rid in to_send]
        for rid, status in expected:
            self.records[rid].sent.add(status)
        if call.killed:
            # The CRM took the writes; the store confirmed nothing (PostgreSQL rolls the claim back,
            # SQLite's claim never changed a row).
            return expected
        landed = [rid for rid in due if self._landed(rid, call.read[rid])]
        for rid in due:
            rec, remote = self.records[rid], call.read[rid]
            if rid in landed or rid in to_send:
                continue
            rec.pending = None  # a person changed the record meanwhile: theirs wins, as rule 1
            rec.sent.clear()  # the CRM told where the record stands
            assert remote.status is not None
            rec.status_read(remote.status, remote.modified_at)
            rec.fields_read(remote.fields.get("Score"), remote.modified_at, now)
            rec.learn(remote.modified_at)
        for rid in landed:
            rec = self.records[rid]
            rec.remote, rec.pending = rec.pending, None
            rec.sent.clear()
            rec.learn(call.read[rid].modified_at)  # rule 5: the stamp of our own write, now known
        outcomes = {o.record_id: o for o in call.outcomes or []}
        for rid in to_send:
            rec = self.records[rid]
            outcome = outcomes.get(rid)
            error = None if outcome is None else outcome.error
            if outcome is not None and error is None:
                rec.sent.clear()  # the CRM holds ours: nothing sent earlier can land unnoticed now
            elif outcome is not None:
                # The CRM refused this status; an earlier one sent before a kill may still have landed.
                rec.sent.discard(rec.pending or "")
            if outcome is None or (error is not None and error.action.value == "retry"):
                rec.retry(now)
            elif error is not None:
                rec.dead_letter()
            else:
                rec.remote, rec.pending = rec.pending, None
                rec.learn(outcome.modified_at)
        return expected

    def _landed(self, rid: str, remote: RemoteRecord) -> bool:
        rec = self.records[rid]
        return KNOWN_LANDED_IS_OURS and remote.status == rec.pending != rec.remote

    def _to_send(self, due: list[str], call: DrainCall) -> list[str]:
        """Due items whose record the CRM still holds as the store knows it, or with a status we sent before a
        kill (no conflict, not landed)."""
        assert call.read is not None
        sent = []
        for rid in due:
            rec, remote = self.records[rid], call.read[rid]
            if self._landed(rid, remote):
                continue
            stale = rec.known is not None and remote.modified_at < rec.known
            assert remote.status is not None
            if remote.status == rec.remote or stale or rec.sent_landed(remote.status):
                sent.append(rid)
        return sent


def sent_writes(writes: list[StatusWrite]) -> list[tuple[str, str]]:
    return sorted((w.record_id, w.status) for w in writes)
