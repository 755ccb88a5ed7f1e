"""Which of ok / degraded / paused / failing an object is in, in the CRM's words, and what /healthz says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.engine import Engine
from connector.explain import _iso
from connector.status import status
from connector.web.queries import HealthFacts, health_facts

BAD_STATES = ("failing", "paused")  # what makes /healthz answer 503


@dataclass(frozen=True)
class ObjectState:
    name: str  # ok | degraded | paused | failing
    words: str | None  # the CRM's own message, or ours when the cause is local
    since: str | None  # ISO instant the condition was recorded
    until: str | None = None  # a pause that ends by itself


def object_state(obj: dict[str, Any], facts: HealthFacts | None) -> ObjectState:
    """The one place the page and /healthz decide an object's state from `status` and the health row.

    When `status` reports a `state` of its own (with `problems`), that answer is the one shown."""
    if "state" in obj:
        words = "; ".join(str(p.get("message", "")) for p in obj.get("problems") or []) or None
        return ObjectState(str(obj["state"]), words, _since(str(obj["state"]), obj, facts), obj.get("paused_until"))
    if obj["last_outcome"] == "failed":
        return ObjectState("failing", obj["last_error"], obj["last_error_at"])
    if obj["paused"]:
        return ObjectState("paused", obj["paused_reason"], obj["last_run"], obj["paused_until"])
    if facts is not None and facts.writeback_error:
        return ObjectState("paused", f"write-back paused: {facts.writeback_error}", _iso(facts.writeback_error_at))
    if facts is not None and facts.activity_error:
        words = f"activity cannot be read: {facts.activity_error}"
        return ObjectState("degraded", words, _iso(facts.activity_error_at))
    return ObjectState("ok", None if obj["last_run"] else "not run yet", obj["last_run"])


def _since(state: str, obj: dict[str, Any], facts: HealthFacts | None) -> str | None:
    if state == "failing":
        return obj.get("last_error_at")
    if state == "degraded" and facts is not None:
        return _iso(facts.activity_error_at)
    if state == "paused" and facts is not None and facts.writeback_error_at and not obj.get("paused"):
        return _iso(facts.writeback_error_at)
    return obj.get("last_run")


def states(engine: Engine, data: dict[str, Any]) -> list[ObjectState]:
    """The state of each object in a `status()` answer, in its order."""
    with engine.store.transaction() as session:
        facts = [health_facts(session, o["source"], o["object"]) for o in data["objects"]]
    return [object_state(o, f) for o, f in zip(data["objects"], facts, strict=True)]


def healthz(engine: Engine, now: datetime) -> tuple[bool, dict[str, Any]]:
    """Every failing or paused object is a problem (503); degraded ones are listed under `objects` only."""
    data = status(engine, now)
    found = states(engine, data)
    problems = [
        f"{o['source']} {o['object']}: {s.name}" + (f": {s.words}" if s.words else "")
        for o, s in zip(data["objects"], found, strict=True)
        if s.name in BAD_STATES
    ]
    objects = [
        {"source": o["source"], "object": o["object"], "state": s.name, "message": s.words, "since": s.since}
        for o, s in zip(data["objects"], found, strict=True)
    ]
    return not problems, {"ok": not problems, "problems": problems, "objects": objects}
