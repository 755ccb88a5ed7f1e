"""What `sync --once` and `resync` report, as text and JSON, and their dry runs on a throwaway copy.

A dry run runs the same code as the real command (see `dryrun`), so what it prints is what the real
run then does: the same moves, the same writes, the same counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from connector.config import SyncedObject
from connector.cycle import Jobs, ObjectOutcome
from connector.dryrun import Move, dry_run, moves_since, next_transition
from connector.engine import Engine
from connector.moves import move_text
from connector.progress import counting
from connector.resync import Change, ResyncOptions, resync


def outcome_line(outcome: ObjectOutcome, *, dry_run: bool = False) -> str:
    p, d = outcome.pulled, outcome.drained
    written = "would write back" if dry_run else "written back"
    line = (
        f"{outcome.source} {outcome.object}: pulled {p.records} ({p.new} new, {p.transitions} moved, "
        f"{p.quarantined} quarantined), "
        f"activity {outcome.events.new} new, timers moved {outcome.timers.transitions}, "
        f"{written} {d.done}, conflicts {d.conflicts}, retrying {d.retried}, dead {d.dead}"
    )
    if outcome.paused:
        line += f"; PAUSED: {outcome.paused}"
    if outcome.degraded:
        line += f"; DEGRADED: {outcome.degraded}"
    if d.paused:
        line += f"; WRITE-BACK PAUSED: {d.paused} (the items stay pending; fix it and they go out)"
    if outcome.error:
        line += f"; FAILED: {outcome.error}"
    return line


def outcome_json(outcome: ObjectOutcome) -> dict[str, Any]:
    p, d = outcome.pulled, outcome.drained
    return {
        "source": outcome.source,
        "object": outcome.object,
        "pulled": p.records,
        "new": p.new,
        "moved": p.transitions + outcome.events.moves.transitions + outcome.timers.transitions,
        "written": d.done,
        "conflicts": d.conflicts,
        "dead": d.dead,
        "error": outcome.error,
        "paused": outcome.paused,
        "degraded": outcome.degraded,
        "writeback_paused": d.paused,
    }


def _move_line(move: Move) -> str:
    why = f"trigger '{move.rule}'" if move.rule else move.cause
    return f"  move {move.id}: {move_text(move.from_stage, move.to_stage)} ({why}: {move.detail})"


def sync_dry_run(engine: Engine, objects: Sequence[SyncedObject], now: datetime) -> tuple[dict[str, Any], bool]:
    """`sync --once --dry-run`: the whole cycle on a throwaway copy, writes held back; nothing changes anywhere."""
    results, lines, failed = [], [], False
    with dry_run(engine) as run:
        jobs = Jobs(run.engine)
        outcomes = []
        for synced in objects:
            with counting(f"{synced.source} {synced.name}") as report:
                outcomes.append(jobs.once(synced, now, lambda stats: report(stats.records)))
        moves = run.moves()
        for outcome in outcomes:
            failed = failed or outcome.failed
            mine = [m for m in moves if (m.source, m.object) == (outcome.source, outcome.object)]
            writes = run.writes(outcome.source, outcome.object)
            results.append(
                {
                    **outcome_json(outcome),
                    "moves": [m.as_json() for m in mine],
                    "writes": [{"id": w.record_id, "status": w.status, "owner": w.owner} for w in writes],
                    "still_queued": [{"id": i, "status": s} for i, s in run.queued(outcome.source, outcome.object)],
                }
            )
            lines.append(outcome_line(outcome, dry_run=True))
            entered = sum(1 for m in mine if m.from_stage is None)
            if entered:
                # A record new to the store taking the stage its CRM status maps to is not a move.
                lines.append(f"  {entered} records new to the store take the stage of their CRM status")
            lines.extend(_move_line(m) for m in mine if m.from_stage is not None)
            lines.extend(
                f"  write {w.record_id}: {w.status}" + (f" (owner {w.owner})" if w.owner else "") for w in writes
            )
    lines.append("dry run: nothing was changed (store, cursor, CRM)")
    return {"dry_run": True, "objects": results, "text": "\n".join(lines)}, failed


def _changes(moves: Sequence[Move], synced: SyncedObject) -> list[Change]:
    return [
        Change(m.id, m.from_stage, m.to_stage, m.detail)
        for m in moves
        if (m.source, m.object) == (synced.source, synced.name)
    ]


def resync_objects(
    engine: Engine, objects: Sequence[SyncedObject], options: ResyncOptions, now: datetime
) -> dict[str, Any]:
    """`resync`, or with `dry_run` the same resync on a throwaway copy: the same moves, the same counts."""
    results, lines = [], []
    for synced in objects:
        real = ResyncOptions(options.full, options.since, options.ids, options.remap, options.push, dry_run=False)
        with counting(f"{synced.source} {synced.name}") as progress:
            if options.dry_run:
                with dry_run(engine) as run:
                    report = resync(run.engine, synced, real, now, progress)
                    changes = [*report.changes, *_changes(run.moves(), synced)]
            else:
                first = next_transition(engine.store)
                report = resync(engine, synced, real, now, progress)
                changes = [*report.changes, *_changes(moves_since(engine.store, first), synced)]
        r = report.repaired
        count = report.pushed or r.changed
        verb = "would change" if options.dry_run else "repaired"
        for change in changes:
            lines.append(
                f"  {change.id}: {move_text(change.from_stage, change.to_stage)}  {change.detail}"
            )
        lines.append(
            f"{synced.source} {synced.name}: read {report.read}, {verb} {count} "
            f"({r.transitions} moved, {r.quarantined} quarantined, {report.pushed} pushed)"
        )
        results.append(
            {
                "source": synced.source,
                "object": synced.name,
                "read": report.read,
                "changed": count,
                "moved": r.transitions,
                "quarantined": r.quarantined,
                "pushed": report.pushed,
                "changes": [{"id": c.id, "from": c.from_stage, "to": c.to_stage, "detail": c.detail} for c in changes],
            }
        )
    if options.dry_run:
        lines.append("dry run: nothing was changed (store, CRM)")
    return {"dry_run": options.dry_run, "objects": results, "text": "\n".join(lines)}
