"""Each object's state (ok / degraded / paused / failing) as the page shows it, and what /healthz answers.

The state and its problems are `connector status`'s (`connector.status.object_state`); this adds since
when, from the health row, and the /healthz summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.engine import Engine
from connector.explain import _iso
from connector.status import status
from connector.web.queries import HealthFacts, health_facts

BAD_STATES = ("failing", "paused")  # what makes /healthz answer 503; degraded is reported but healthy


@dataclass(frozen=True)
class ObjectState:
    name: str  # ok | degraded | paused | failing
    words: str | None  # the CRM's own words (every problem, worst first)
    since: str | None  # ISO instant the condition was recorded; None when ok
    until: str | None = None  # a pause that ends by itself


def object_state(obj: dict[str, Any], facts: HealthFacts | None) -> ObjectState:
    """`obj` is one object of `status()`."""
    name = str(obj["state"])
    words = "; ".join(str(p["message"]) for p in obj["problems"]) or (None if obj["last_run"] else "not run yet")
    return ObjectState(name, words, _since(name, obj, facts), obj["paused_until"])


def _since(state: str, obj: dict[str, Any], facts: HealthFacts | None) -> str | None:
    if state == "failing":
        return _text(obj["last_error_at"])
    if state == "paused" and not obj["paused"] and facts is not None:
        return _iso(facts.writeback_error_at)
    if state == "degraded" and facts is not None:
        return _iso(facts.activity_error_at)
    if state == "paused":
        return _text(obj["last_run"])  # the run that found the budget spent
    return None  # ok: the health row does not keep when it last changed


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def states(engine: Engine, data: dict[str, Any]) -> list[ObjectState]:
    """The state of each object in a `status()` answer, in its order."""
    with engine.store.transaction() as session:
        facts = [health_facts(session, o["source"], o["object"]) for o in data["objects"]]
    return [object_state(o, f) for o, f in zip(data["objects"], facts, strict=True)]


def healthz(engine: Engine, now: datetime) -> tuple[bool, dict[str, Any]]:
    """Every problem of every object that is not ok, each in the CRM's words; 503 when any is failing or paused."""
    data = status(engine, now)
    found = states(engine, data)
    problems = [
        f"{o['source']} {o['object']}: {o['state']}: {p['message']}" for o in data["objects"] for p in o["problems"]
    ]
    ok = not any(o["state"] in BAD_STATES for o in data["objects"])
    objects = [
        {"source": o["source"], "object": o["object"], "state": s.name, "message": s.words, "since": s.since}
        for o, s in zip(data["objects"], found, strict=True)
    ]
    return ok, {"ok": ok, "problems": problems, "objects": objects}
