"""The health of the sync per source/object: what `connector status` prints."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connector.store.glance import CoreGlance, Glance, instant

if TYPE_CHECKING:
    from connector.config import SyncedObject
    from connector.engine import Engine

# Plain SQL through `store.glance`, not the ORM or the engine: `connector status` must start at once
# (tests/test_lazy_imports.py counts what it imports). The tables are those of `store/schema.py`.


@dataclass(frozen=True)
class Health:
    """An object's row of `source_health`: what the last runs left for `status` to tell."""

    last_run_at: datetime | None
    last_outcome: str | None
    last_error: str | None
    last_error_at: datetime | None
    paused_until: datetime | None
    paused_reason: str | None
    api_used: int | None
    api_limit: int | None
    activity_error: str | None
    writeback_error: str | None


_HEALTH_COLUMNS = tuple(f.name for f in fields(Health))
_INSTANTS = frozenset({"last_run_at", "last_error_at", "paused_until"})
_WHERE = "source = :source AND object = :object"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def object_state(health: Health | None, now: datetime) -> tuple[str, list[dict[str, str]]]:
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


def _health(glance: Glance, key: dict[str, object]) -> Health | None:
    rows = glance.rows(f"SELECT {', '.join(_HEALTH_COLUMNS)} FROM source_health WHERE {_WHERE}", key)
    if not rows:
        return None
    values: dict[str, Any] = {name: instant(v) if name in _INSTANTS else v
                              for name, v in zip(_HEALTH_COLUMNS, rows[0], strict=True)}
    return Health(**values)


def _counts(glance: Glance, sql: str, key: dict[str, object]) -> dict[Any, int]:
    return {name: int(count) for name, count in glance.rows(sql, key)}


def object_status(glance: Glance, synced: SyncedObject, now: datetime) -> dict[str, Any]:
    key: dict[str, object] = {"source": synced.source, "object": synced.name}
    cursor = glance.rows(f"SELECT modified_at, last_id FROM cursors WHERE {_WHERE} AND kind = 'records'", key)
    cursor_at, cursor_id = (instant(cursor[0][0]), cursor[0][1]) if cursor else (None, None)
    counts = _counts(glance, f"SELECT stage, count(*) FROM records WHERE {_WHERE} AND NOT deleted GROUP BY stage", key)
    outbox = _counts(glance, f"SELECT state, count(*) FROM outbox WHERE {_WHERE} GROUP BY state", key)
    quarantine = f"FROM records WHERE {_WHERE} AND quarantined IS NOT NULL AND NOT deleted"
    quarantine_count = int(glance.rows(f"SELECT count(*) {quarantine}", key)[0][0])
    examples = glance.rows(f"SELECT external_id, quarantined {quarantine} LIMIT 20", key)
    health = _health(glance, key)
    by_stage = {name: counts.get(name, 0) for name in synced.mapping.stage_names}
    extra = {k: v for k, v in counts.items() if k not in by_stage}
    paused = health is not None and health.paused_until is not None and health.paused_until > now
    state, problems = object_state(health, now)
    return {
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


def read_status(glance: Glance, objects: list[SyncedObject], now: datetime) -> dict[str, Any]:
    return {"objects": [object_status(glance, synced, now) for synced in objects]}


def status(engine: Engine, now: datetime) -> dict[str, Any]:
    """The same answer from a running engine's store (the health page, the daemon)."""
    glance = CoreGlance(engine.store.engine)
    try:
        return read_status(glance, engine.objects(), now)
    finally:
        glance.close()


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
