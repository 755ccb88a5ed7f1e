"""The outbox drain: claim due items, check for conflicts, push in batches, then confirm, retry or dead-letter.

An item is marked done only after the CRM confirmed it, so a crash at any point at worst resends a
write (harmless: it sets the same value). A person's change found by the conflict check wins over
our pending write and is applied as a status read from the CRM (rule 1).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

from connector import rules
from connector.config import SyncedObject, Writeback
from connector.record_writes import decide_remote, sent_landed, write_for
from connector.sources.base import RemoteRecord, Source, StatusWrite, WriteOutcome
from connector.sources.errors import Action, CrmError, SourcePaused
from connector.store import repo
from connector.store.db import Store
from connector.store.schema import OutboxItem

T = TypeVar("T")
log = logging.getLogger("connector.writeback")
PROBE = 10  # items sent to find out whether a configuration error has been fixed

# Items claimed per batch: a whole number of every source's read and write batches (Salesforce's conflict
# check reads 300 ids a query and writes 200 a call, HubSpot reads and writes 100), so no call of a full
# claim goes out part-empty. 1,000 split Salesforce's reads 300/300/300/100: 81 reads for 20,000 items, not 67.
CLAIM = 1200


@dataclass
class DrainStats:
    claimed: int = 0
    done: int = 0
    dead: int = 0
    conflicts: int = 0
    retried: int = 0
    skipped: int = 0  # converted or deleted records: never written
    # The CRM refused the write for the configuration's sake (the status field unknown or read-only, no
    # permission to update the object, a value its picklist lacks): the admin must act; items stay pending.
    paused: str | None = None

    def add(self, other: DrainStats) -> None:
        for name in ("claimed", "done", "dead", "conflicts", "retried", "skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.paused = other.paused or self.paused


@dataclass(frozen=True)
class Claimed:
    id: int
    version: int
    record_id: int
    external_id: str
    status: str
    owner: str | None
    attempts: int


def retry_delay(attempts: int, rng: random.Random) -> timedelta:
    """Capped exponential backoff with jitter between attempts of the same item."""
    base = min(3600.0, 10.0 * 2**attempts)
    return timedelta(seconds=rng.uniform(base / 2, base))


class Drain:
    def __init__(
        self, store: Store, source: Source, settings: Writeback, batch: int = CLAIM, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.source = source
        self.settings = settings
        self.batch = batch
        self.rng = rng or random.Random()

    def run(
        self,
        synced: SyncedObject,
        now: datetime,
        max_batches: int = 1000,
        stop: threading.Event | None = None,
        *,
        paused: bool = False,
    ) -> DrainStats:
        """Drain everything due now; a whole-call failure stops the drain and propagates.

        With `paused` (the last drain was refused for a configuration error) a small probe batch goes
        first: once the admin has fixed the field or the permission, it succeeds and the rest follow.
        """
        total = DrainStats()
        size = PROBE if paused else self.batch
        for _ in range(max_batches):
            stats = self._one_batch(synced, now, size)
            total.add(stats)
            if stats.paused is not None or stats.claimed < size or (stop is not None and stop.is_set()):
                break
            size = self.batch
        return total

    def _one_batch(self, synced: SyncedObject, now: datetime, size: int) -> DrainStats:
        if self.store.dialect == "postgresql":
            # Claim, send and confirm under the row locks, so another daemon skips these items.
            return self.store.run(
                lambda session: self._send(session, self._claim(session, synced, now, size), synced, now)
            )
        # SQLite has one daemon: claim in a short read, send outside any transaction, then confirm.
        with self.store.transaction() as session:
            items = self._claim(session, synced, now, size)
        return self._send(None, items, synced, now)

    def _claim(self, session: Session, synced: SyncedObject, now: datetime, size: int) -> list[Claimed]:
        rows: list[OutboxItem] = repo.claim_due(session, synced.source, synced.name, now, size)
        return [Claimed(r.id, r.version, r.record_id, r.external_id, r.status, r.owner, r.attempts) for r in rows]

    def _in(self, session: Session | None, work: Callable[[Session], T]) -> T:
        """Run in the caller's transaction when there is one, else in a unit of work of its own."""
        return work(session) if session is not None else self.store.run(work)

    def _send(self, session: Session | None, items: list[Claimed], synced: SyncedObject, now: datetime) -> DrainStats:
        stats = DrainStats(claimed=len(items))
        if not items:
            return stats
        stored = self._in(
            session, lambda tx: repo.load_records(tx, synced.source, synced.name, [i.external_id for i in items])
        )
        to_send: list[Claimed] = []
        skip: list[tuple[Claimed, str]] = []
        for item in items:
            record = stored.get(item.external_id)
            if record is None or record.deleted:
                skip.append((item, "the record was deleted in the CRM"))
            elif record.converted:
                skip.append((item, "the lead is converted; Salesforce does not allow writing to it"))
            else:
                to_send.append(item)
        conflicts: list[tuple[Claimed, RemoteRecord | None]] = []
        landed: list[Claimed] = []  # sent before a crash, never confirmed: the CRM already holds them
        landed_at: dict[str, datetime] = {}  # the CRM's stamp of each, as the conflict check read it
        final = to_send
        holds: dict[str, str | None] = {}  # what the CRM holds, where an earlier write of ours landed unconfirmed
        if self.settings.conflict_check and to_send:
            current = self.source.read_statuses(synced.name, [i.external_id for i in to_send])
            sent = self._in(session, lambda tx: repo.sent_statuses(tx, [stored[i.external_id].id for i in to_send]))
            final = []
            for item in to_send:
                remote = current.get(item.external_id)
                record = stored[item.external_id]
                recorded = record.state.remote_status
                if remote is not None and not remote.deleted and remote.status == item.status != recorded:
                    landed.append(item)
                    landed_at[item.external_id] = remote.modified_at
                elif remote is not None and not remote.deleted and sent_landed(record, remote, sent.get(record.id)):
                    # Ours, sent before a kill and replaced by this newer item since: not a person's change.
                    holds[item.external_id] = remote.status
                    final.append(item)
                elif remote is None or remote.deleted or (
                    remote.status != recorded and not rules.is_stale(record.remote_modified_at, remote.modified_at)
                ):
                    conflicts.append((item, remote))
                else:
                    final.append(item)
        writes = [
            StatusWrite(
                i.external_id, i.status, i.owner, holds.get(i.external_id, stored[i.external_id].state.remote_status)
            )
            for i in final
        ]
        outcomes: list[WriteOutcome] = []
        failure: CrmError | None = None
        if writes:
            # Committed before the call: if the process dies after the CRM took these, a later read of
            # them is still known for ours (`sent_landed`), whatever has been queued since.
            self.store.run(
                lambda tx: repo.note_sent(tx, [(stored[w.record_id].id, w.status) for w in writes], now)
            )
            try:
                outcomes = self.source.write_statuses(synced.name, writes)
            except CrmError as exc:
                failure = exc
        # Confirmed with the stamp read, as a write answer carries it: a lagging search that still shows
        # the status before our write is then stale (rule 5), not a person's change.
        outcomes = [*outcomes, *(WriteOutcome(i.external_id, modified_at=landed_at[i.external_id]) for i in landed)]
        final = [*final, *landed]
        moved = self._read_meanwhile(session, synced, stored, final)
        self._in(
            session,
            lambda tx: self._confirm(tx, synced, now, stored, skip, conflicts, final, outcomes, failure, stats, moved),
        )
        if failure is not None and failure.action is Action.PAUSE:
            raise failure
        return stats

    def _read_meanwhile(
        self, session: Session | None, synced: SyncedObject, stored: dict[str, repo.StoredRecord], final: list[Claimed]
    ) -> dict[str, RemoteRecord | None]:
        """Records a pull read while we were sending, finding a status other than ours, as the CRM has them now.

        On SQLite the drain sends outside any transaction and the daemon's pull job runs beside it: the
        status that pull read may be a person's, set after our write. Confirming ours over it would make
        the store believe the CRM holds our status, and ignore that person's status when it comes again.
        """
        if not final:
            return {}
        ids = [item.external_id for item in final]
        fresh = self._in(session, lambda tx: repo.load_records(tx, synced.source, synced.name, ids))
        moved = [
            item.external_id
            for item in final
            if item.external_id in fresh
            and fresh[item.external_id].state.remote_status
            not in (stored[item.external_id].state.remote_status, item.status)
        ]
        if not moved:
            return {}
        try:
            current = self.source.read_statuses(synced.name, moved)
        except CrmError:
            current = {}  # keep what the pull read: a sent write must not stay pending, to be sent again
        return {rid: current.get(rid) for rid in moved}

    def _confirm(
        self,
        session: Session,
        synced: SyncedObject,
        now: datetime,
        stored: dict[str, repo.StoredRecord],
        skip: Sequence[tuple[Claimed, str]],
        conflicts: Sequence[tuple[Claimed, RemoteRecord | None]],
        final: Sequence[Claimed],
        outcomes: Sequence[WriteOutcome],
        failure: CrmError | None,
        stats: DrainStats,
        moved: dict[str, RemoteRecord | None] | None = None,
    ) -> None:
        for item, reason in skip:
            repo.finish_item(session, item.id, item.version, "cancelled", now, reason)
            stats.skipped += 1
        # The records as they are now: on SQLite the send ran outside any transaction, and a manual set
        # committed meanwhile must not be reverted by confirming on the snapshot taken before the send.
        ids = [item.external_id for item, _ in conflicts] + [item.external_id for item in final]
        stored = {**stored, **repo.load_records(session, synced.source, synced.name, ids)}
        # A person changed the record meanwhile: drop our write, take theirs as a status read (rule 1).
        writes: list[repo.RecordWrite] = []
        for item, remote in conflicts:
            stats.conflicts += 1
            reason = (
                "conflict: the record changed in the CRM meanwhile" if remote else "the record is gone from the CRM"
            )
            repo.finish_item(session, item.id, item.version, "cancelled", now, reason)
            log.info(
                "%s %s %s: write-back of %r dropped: %s",
                synced.source,
                synced.name,
                item.external_id,
                item.status,
                reason,
            )
            if remote is not None:
                write = decide_remote(stored[item.external_id], remote, synced.mapping)
                if write is not None:
                    writes.append(write)
        by_id = {o.record_id: o for o in outcomes}
        confirmed: list[tuple[int, int]] = []
        done_ids: set[int] = set()
        refused: list[tuple[int, str]] = []
        for item in final:
            outcome = by_id.get(item.external_id)
            error = failure if outcome is None else outcome.error
            if error is None:
                confirmed.append((item.id, item.version))
                done_ids.add(item.id)
                record = stored[item.external_id]
                if moved and item.external_id in moved:
                    remote = moved[item.external_id]
                    if remote is None:
                        continue  # the CRM could not be asked again: keep what the pull read
                    if remote.status != item.status:
                        # A pull read another status after we sent ours, and the CRM holds it now: rule 1.
                        found = decide_remote(record, remote, synced.mapping)
                        if found is not None:
                            writes.append(found)
                        continue
                    # The CRM holds ours after all: an ordinary confirmation.
                state = rules.written(record.state, item.status)
                write = write_for(record, item.external_id, rules.Decision(state), synced.mapping)
                if outcome is not None and outcome.modified_at is not None:
                    # The CRM's stamp of our write: a lagging search that still shows the old value is
                    # older than this, so it is recognised as stale and not taken for a person's change.
                    known = write.remote_modified_at
                    write.remote_modified_at = max(outcome.modified_at, known) if known else outcome.modified_at
                writes.append(write)
            else:
                if outcome is not None and item.external_id in stored:
                    # The CRM answered no to this status; a status sent before a kill may still have landed.
                    refused.append((stored[item.external_id].id, item.status))
                self._failed(session, synced, item, error, now, stats)
        # One statement for the batch: an UPDATE per item was most of a drain's time.
        stats.done += repo.finish_items(session, confirmed, "done", now)
        settled = {item.external_id for item, _ in conflicts} | {i.external_id for i in final if i.id in done_ids}
        repo.forget_sent(session, [stored[x].id for x in settled if x in stored])
        repo.forget_refused(session, refused)
        repo.save_records(session, synced.source, synced.name, writes, now)

    def _failed(
        self, session: Session, synced: SyncedObject, item: Claimed, error: CrmError, now: datetime, stats: DrainStats
    ) -> None:
        """A write the CRM refused: wait for the admin, dead-letter it, or try again later."""
        if error.action is Action.ADMIN:
            # Not this record's fault: every record would fail alike. The item stays pending as it
            # is (no attempt counted) and the object's write-back waits for the admin.
            if stats.paused is None:
                field = f"{synced.name}.{synced.settings.status_field}"
                stats.paused = f"the CRM refused to write {field}: {error.describe()}"
        elif error.action is Action.RECORD or item.attempts + 1 >= self.settings.max_attempts:
            repo.finish_item(session, item.id, item.version, "dead", now, error.describe())
            log.warning(
                "%s %s %s: write-back of %r dead-lettered: %s",
                synced.source,
                synced.name,
                item.external_id,
                item.status,
                error.describe(),
            )
            stats.dead += 1
        else:
            wait = retry_delay(item.attempts, self.rng)
            if isinstance(error, SourcePaused) or error.retry_after:
                wait = max(wait, timedelta(seconds=error.retry_after or 0))
            repo.retry_item(session, item.id, item.version, now + wait, error.describe(), now)
            stats.retried += 1
