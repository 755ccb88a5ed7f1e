"""Why a record is (or is not) in its stage: its state, its lock, and its history with causes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from connector.config import SyncedObject
from connector.engine import Engine
from connector.mapping import CriteriaTrigger, InactiveTrigger
from connector.moves import move_text
from connector.store import repo
from connector.store.schema import OutboxItem, Record


def explain(engine: Engine, synced: SyncedObject, external_id: str) -> dict[str, Any]:
    mapping = synced.mapping
    with engine.store.transaction() as session:
        record = engine._one(session, synced, external_id)
        rows = repo.history(session, record.id)
        outbox = list(
            session.scalars(select(OutboxItem).where(OutboxItem.record_id == record.id).order_by(OutboxItem.id))
        )
        merged_into = session.scalar(select(Record.merged_into).where(Record.id == record.id))
    state = record.state
    stage = state.stage
    category = mapping.category(stage).value if stage and mapping.has_stage(stage) else None
    pending = next((o for o in outbox if o.state == "pending"), None)
    options = []
    locked = state.locked(mapping)
    # A locked record is moved by no trigger: listing them would promise moves that cannot happen.
    if stage and mapping.has_stage(stage) and not locked:
        for trigger in mapping.triggers:
            if trigger.applies_from(stage, mapping.category(stage)):
                if isinstance(trigger, InactiveTrigger):
                    when = f"inactive for {_human(trigger.after)}"
                elif isinstance(trigger, CriteriaTrigger):
                    when = f"{trigger.on} (when it becomes true)"
                else:
                    when = trigger.on
                options.append({"trigger": trigger.name, "on": when, "to": trigger.to})
    return {
        "source": synced.source,
        "object": synced.name,
        "id": external_id,
        "stage": stage,
        "category": category,
        "remote_status": state.remote_status,
        "set_by": state.set_by.value if state.set_by else None,
        "locked": locked,
        "quarantined": state.quarantined is not None,
        "quarantined_status": state.quarantined,
        "deleted": record.deleted,
        "converted": record.converted,
        "owner": record.owner,
        "merged_into": merged_into,
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


def _human(value: timedelta) -> str:
    """14 days, 36 hours, 90 minutes: how a mapping's `after` reads in a sentence."""
    seconds = int(value.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' * (count != 1)}"
    return f"{seconds} seconds"  # pragma: no cover  (every whole second count matches above)


def _cause(entry: dict[str, Any]) -> str:
    if entry["cause"] == "criteria" and entry["rule"]:
        # "criteria hot: HubSpotScore 42 -> 55 (gte 50)"; the values were bounded and made printable when recorded.
        return f"criteria {entry['rule']}: {entry['detail']}"
    cause = str(entry["cause"]) + (f" {entry['detail']!r}" if entry["detail"] else "")
    return cause + (f", trigger '{entry['rule']}'" if entry["rule"] else "")


def render_text(data: dict[str, Any]) -> str:
    where = f"{data['source']} {data['object']} {data['id']}"
    lines = [f"{where}: " + (f"{data['stage']} ({data['category']})" if data["stage"] else "no stage")]
    status = repr(data["remote_status"]) if data["remote_status"] is not None else "none read yet"
    set_by = f"   set by: {data['set_by']}" if data["set_by"] else ""
    lines.append(f"  CRM status: {status}{set_by}")
    if data["locked"]:
        lines.append(
            f"  locked: the sticky stage {data['stage']!r} was set by {data['set_by']}, so triggers cannot move it; "
            f"let them again with: connector stage unlock {where}"
        )
    if data["quarantined"]:
        lines.append(f"  QUARANTINED: the CRM status {data['quarantined_status']!r} is not in the mapping")
    if data.get("merged_into"):
        lines.append(f"  merged into {data['merged_into']} in the CRM: that record carries on; this one is out")
    if data["deleted"]:
        lines.append("  deleted in the CRM: out of the funnel")
    if data["converted"]:
        lines.append("  converted lead: never written to")
    since = f"in stage since {data['stage_entered_at']}" if data["stage_entered_at"] else "time in stage unknown"
    lines.append(f"  {since}; last activity {data['last_activity_at'] or 'none'}")
    if data["pending_writeback"]:
        lines.append(f"  pending write-back: {data['pending_writeback']!r}")
    for item in [w for w in data["writebacks"] if w["state"] == "dead"][-3:]:
        lines.append(f"  dead write-back {item['status']!r}: {item['error']}")
    for item in [w for w in data["writebacks"] if w["state"] == "cancelled"][-3:]:
        reason = item["error"] or "the CRM status changed before it went out, and the CRM wins"
        lines.append(f"  cancelled write-back {item['status']!r} ({item['at']}): {reason}")
    if data["triggers_from_here"]:
        lines.append("  triggers that can move it from here:")
        for option in data["triggers_from_here"]:
            lines.append(f"    {option['trigger']}: on {option['on']} -> {option['to']}")
    lines.append("history:" if data["history"] else "history: none recorded")
    for entry in data["history"]:
        move = move_text(entry["from"], entry["to"])
        cause = _cause(entry)
        if entry["suppressed"]:
            lines.append(f"  {entry['at']}  {move:<32} NOT MOVED: {entry['reason']} ({cause})")
        else:
            lines.append(f"  {entry['at']}  {move:<32} {cause}")
    return "\n".join(lines)
