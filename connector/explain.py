"""Why a record is (or is not) in its stage: its state, its lock, and its history with causes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from connector.config import SyncedObject
from connector.engine import Engine
from connector.mapping import InactiveTrigger
from connector.store import repo
from connector.store.schema import OutboxItem


def explain(engine: Engine, synced: SyncedObject, external_id: str) -> dict[str, Any]:
    mapping = synced.mapping
    with engine.store.transaction() as session:
        record = engine._one(session, synced, external_id)
        rows = repo.history(session, record.id)
        outbox = list(
            session.scalars(select(OutboxItem).where(OutboxItem.record_id == record.id).order_by(OutboxItem.id))
        )
    state = record.state
    stage = state.stage
    category = mapping.category(stage).value if stage and mapping.has_stage(stage) else None
    pending = next((o for o in outbox if o.state == "pending"), None)
    options = []
    if stage and mapping.has_stage(stage):
        for trigger in mapping.triggers:
            if trigger.applies_from(stage, mapping.category(stage)):
                when = f"inactive for {trigger.after}" if isinstance(trigger, InactiveTrigger) else trigger.on
                options.append({"trigger": trigger.name, "on": when, "to": trigger.to})
    return {
        "source": synced.source,
        "object": synced.name,
        "id": external_id,
        "stage": stage,
        "category": category,
        "remote_status": state.remote_status,
        "set_by": state.set_by.value if state.set_by else None,
        "locked": state.locked(mapping),
        "quarantined": state.quarantined is not None,
        "quarantined_status": state.quarantined,
        "deleted": record.deleted,
        "converted": record.converted,
        "owner": record.owner,
        "stage_entered_at": _iso(state.stage_entered_at),
        "last_activity_at": _iso(state.last_activity_at),
        "pending_writeback": pending.status if pending else None,
        "writebacks": [
            {"status": o.status, "state": o.state, "attempts": o.attempts, "error": o.last_error,
             "at": _iso(o.updated_at)}
            for o in outbox
        ],
        "triggers_from_here": options,
        "history": [
            {
                "at": _iso(row.at),
                "from": row.from_stage,
                "to": row.to_stage,
                "cause": row.cause,
                "detail": row.detail,
                "rule": row.rule,
                "suppressed": row.suppressed,
                "reason": row.reason,
            }
            for row in rows
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def render_text(data: dict[str, Any]) -> str:
    lines = [
        f"{data['source']} {data['object']} {data['id']}: "
        + (f"{data['stage']} ({data['category']})" if data["stage"] else "no stage"),
        f"  CRM status: {data['remote_status']!r}   set by: {data['set_by']}   "
        f"locked: {'yes (sticky stage set by ' + str(data['set_by']) + ')' if data['locked'] else 'no'}",
    ]
    if data["quarantined"]:
        lines.append(f"  QUARANTINED: the CRM status {data['quarantined_status']!r} is not in the mapping")
    if data["deleted"]:
        lines.append("  deleted in the CRM: out of the funnel")
    if data["converted"]:
        lines.append("  converted lead: never written to")
    lines.append(f"  in stage since {data['stage_entered_at']}; last activity {data['last_activity_at'] or 'none'}")
    if data["pending_writeback"]:
        lines.append(f"  pending write-back: {data['pending_writeback']!r}")
    dead = [w for w in data["writebacks"] if w["state"] == "dead"]
    for item in dead[-3:]:
        lines.append(f"  dead write-back {item['status']!r}: {item['error']}")
    if data["triggers_from_here"]:
        lines.append("  triggers that can move it from here:")
        for option in data["triggers_from_here"]:
            lines.append(f"    {option['trigger']}: on {option['on']} -> {option['to']}")
    lines.append("history:")
    for entry in data["history"]:
        move = f"{entry['from'] or '(new)'} -> {entry['to'] or '(out)'}"
        cause = entry["cause"] + (f" {entry['detail']!r}" if entry["detail"] else "")
        if entry["rule"]:
            cause += f", trigger '{entry['rule']}'"
        if entry["suppressed"]:
            lines.append(f"  {entry['at']}  {move:<32} NOT MOVED: {entry['reason']} ({cause})")
        else:
            lines.append(f"  {entry['at']}  {move:<32} {cause}")
    return "\n".join(lines)
