"""The health of the sync per source/object: what `connector status` prints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connector.engine import Engine
from connector.explain import _iso
from connector.store import repo
from connector.store.schema import SourceHealth


def object_state(health: SourceHealth | None, now: datetime) -> tuple[str, list[dict[str, str]]]:
    """ok | degraded | paused | failing, and the problems behind it, each in the CRM's own words.

    Failing wins over paused, paused over degraded: the worst thing first.
    """
    if health is None:
        return "ok", []
    problems: list[dict[str, str]] = []
    state = "ok"
    if health.last_outcome == "failed" and health.last_error:
        problems.append({"kind": "failing", "message": health.last_error})
        state = "failing"
    if health.paused_until is not None and health.paused_until > now:
        problems.append({"kind": "paused", "message": f"{health.paused_reason or 'paused'}; resumes by itself after "
                         f"{_iso(health.paused_until)}"})
        state = "paused" if state == "ok" else state
    if health.writeback_error:
        problems.append({"kind": "writeback_paused", "message": health.writeback_error})
        state = "paused" if state == "ok" else state
    if health.activity_error:
        problems.append({"kind": "activity", "message": f"activity cannot be read: {health.activity_error}"})
        state = "degraded" if state == "ok" else state
    return state, problems


def status(engine: Engine, now: datetime) -> dict[str, Any]:
    objects = []
    with engine.store.transaction() as session:
        for synced in engine.objects():
            cursor_at, cursor_id = repo.get_cursor(session, synced.source, synced.name)
            counts = repo.stage_counts(session, synced.source, synced.name)
            outbox = repo.outbox_counts(session, synced.source, synced.name)
            quarantine_count, examples = repo.quarantined(session, synced.source, synced.name)
            health = session.get(SourceHealth, (synced.source, synced.name))
            by_stage = {name: counts.get(name, 0) for name in synced.mapping.stage_names}
            extra = {k: v for k, v in counts.items() if k not in by_stage}
            paused = health is not None and health.paused_until is not None and health.paused_until > now
            state, problems = object_state(health, now)
            objects.append(
                {
                    "source": synced.source,
                    "object": synced.name,
                    "state": state,
                    "problems": problems,
                    "cursor": {"modified_at": _iso(cursor_at), "id": cursor_id} if cursor_at else None,
                    "lag_seconds": round((now - cursor_at).total_seconds()) if cursor_at else None,
                    "records": sum(counts.values()),
                    "by_stage": by_stage,
                    "unstaged": sum(extra.values()),
                    "outbox_pending": outbox.get("pending", 0),
                    "outbox_dead": outbox.get("dead", 0),
                    "outbox_done": outbox.get("done", 0),
                    "quarantined": quarantine_count,
                    "quarantined_examples": [{"id": i, "status": s} for i, s in examples],
                    "last_run": _iso(health.last_run_at) if health else None,
                    "last_outcome": health.last_outcome if health else None,
                    "last_error": health.last_error if health else None,
                    "last_error_at": _iso(health.last_error_at) if health else None,
                    "paused": paused,
                    "paused_until": _iso(health.paused_until) if paused and health else None,
                    "paused_reason": health.paused_reason if paused and health else None,
                    "api_used": health.api_used if health else None,
                    "api_limit": health.api_limit if health else None,
                }
            )
    return {"objects": objects}


def render_text(data: dict[str, Any]) -> str:
    lines = []
    for obj in data["objects"]:
        state = obj["state"] if obj["last_run"] else "never run"
        lines.append(f"{obj['source']} {obj['object']}: {state.upper()}; {obj['records']} records")
        lines.extend(f"  {problem['kind']}: {problem['message']}" for problem in obj["problems"])
        cursor = obj["cursor"]
        lag = f", lag {obj['lag_seconds']}s" if obj["lag_seconds"] is not None else ""
        lines.append(f"  cursor: {cursor['modified_at'] + ' / ' + cursor['id'] if cursor else 'none'}{lag}")
        lines.append(f"  last run: {obj['last_run'] or 'never'}")
        stages = ", ".join(f"{name} {count}" for name, count in obj["by_stage"].items())
        lines.append(f"  by stage: {stages}" + (f", no stage {obj['unstaged']}" if obj["unstaged"] else ""))
        lines.append(f"  outbox: {obj['outbox_pending']} pending, {obj['outbox_dead']} dead")
        if obj["quarantined"]:
            examples = ", ".join(f"{e['id']} ({e['status']!r})" for e in obj["quarantined_examples"][:5])
            lines.append(f"  quarantined: {obj['quarantined']} (unmapped CRM status): {examples}")
        if obj["api_used"] is not None:
            lines.append(f"  API usage: {obj['api_used']}/{obj['api_limit']}")
        if obj["last_error"]:
            lines.append(f"  last error ({obj['last_error_at']}): {obj['last_error']}")
    return "\n".join(lines)
