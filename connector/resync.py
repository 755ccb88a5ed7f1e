"""Resync and reconcile: compare the CRM with the store and repair drift (`--dry-run`: see `dryrun`).

Reading never moves the incremental cursor: a resync is a side pass, and the scheduled pulls carry
on from where they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from connector import rules
from connector.config import SyncedObject
from connector.engine import Engine, PageStats
from connector.errors import UsageError
from connector.record_writes import write_for
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store import repo


@dataclass(frozen=True)
class Change:
    id: str
    from_stage: str | None
    to_stage: str | None
    detail: str


@dataclass
class ResyncReport:
    source: str
    object: str
    read: int = 0
    repaired: PageStats = field(default_factory=PageStats)
    pushed: int = 0
    changes: list[Change] = field(default_factory=list)  # what --push queued


@dataclass(frozen=True)
class ResyncOptions:
    full: bool = False
    since: datetime | None = None
    ids: Sequence[str] = ()
    remap: bool = False
    push: bool = False
    dry_run: bool = False  # run on a throwaway copy (`connector.dryrun`); `resync` itself always acts


def _pages(engine: Engine, synced: SyncedObject, options: ResyncOptions, now: datetime) -> Iterator[Page]:
    source = engine.sources[synced.source]
    if options.ids:
        found = source.read_statuses(synced.name, list(options.ids))
        missing = [i for i in options.ids if i not in found]
        if missing:
            raise UsageError(f"not found in {synced.source} {synced.name}: {', '.join(missing)}")
        records = [found[i] for i in options.ids]
        yield Page(records, Cursor())
    elif options.since is not None:
        yield from source.pull(synced.name, Cursor(options.since, ""), until=now)
    else:
        yield from source.pull_all(synced.name)


def resync(
    engine: Engine,
    synced: SyncedObject,
    options: ResyncOptions,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> ResyncReport:
    report = ResyncReport(synced.source, synced.name)
    if options.remap:
        stats, _ = engine.remap(synced, now, options.ids or None)
        report.repaired.add(stats)
        if not (options.full or options.since or options.ids or options.push):
            return report
    for page in _pages(engine, synced, options, now):
        report.read += len(page.records)
        if progress is not None:
            progress(report.read)
        if options.push:
            report.pushed += _push(engine, synced, page.records, now, report.changes)
        else:
            report.repaired.add(engine.apply_page(synced, page, now, save_cursor=False))
    return report


def _push(
    engine: Engine,
    synced: SyncedObject,
    records: Sequence[RemoteRecord],
    now: datetime,
    changes: list[Change],
) -> int:
    """Queue our stage's status where the CRM holds another one (the CRM's value is recorded as read)."""

    def work(session: Session) -> int:
        stored = repo.load_records(session, synced.source, synced.name, [r.id for r in records])
        writes, queued = [], 0
        for remote in records:
            record = stored.get(remote.id)
            if record is None or record.state.stage is None or record.converted or remote.deleted:
                continue
            want = synced.mapping.status_for_stage(record.state.stage)
            if remote.status == want:
                continue
            changes.append(
                Change(remote.id, record.state.stage, record.state.stage, f"push {want!r} over {remote.status!r}")
            )
            queued += 1
            state = rules.written(record.state, remote.status or "")
            writes.append(write_for(record, remote.id, rules.Decision(state, writeback=want), synced.mapping))
        if writes:
            repo.save_records(session, synced.source, synced.name, writes, now)
        return queued

    return engine.store.run(work)
