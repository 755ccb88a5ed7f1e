"""Everything the health page shows for one object, read in one go from `status`, `report funnel` and queries."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from connector.config import SyncedObject
from connector.engine import Engine
from connector.reports import ObjectFunnel, funnel
from connector.status import status
from connector.store.schema import TransitionRow
from connector.web.queries import (
    DeadLetter,
    QuarantineGroup,
    RecentMove,
    dead_letters,
    quarantine_groups,
    recent_moves,
)
from connector.web.state import ObjectState, states


@dataclass(frozen=True)
class ObjectView:
    source: str
    object: str
    state: ObjectState
    status: dict[str, Any]  # this object's entry of `connector status --json`
    stage_names: list[str]
    dead: list[DeadLetter]
    quarantine: list[QuarantineGroup]
    moves: list[RecentMove]
    funnel: ObjectFunnel


class FunnelCache:
    """`report funnel`'s numbers, recomputed only when a transition was written, and at most once a minute.

    The funnel reads every transition (seconds for tens of thousands of records); the page refreshes
    every few seconds in any number of browsers. One computation at a time; the others wait for it.
    Entered, conversion and median may so lag by a minute; the records per stage are always read anew.
    """

    def __init__(self, max_age: float = 60.0, clock: Any = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._key: int | None = None
        self._at = 0.0
        self._funnels: dict[tuple[str, str], ObjectFunnel] = {}
        self.computed_at: datetime | None = None

    def get(self, engine: Engine, objects: list[SyncedObject], now: datetime) -> dict[tuple[str, str], ObjectFunnel]:
        with self._lock:
            with engine.store.transaction() as session:
                key = session.scalar(select(func.max(TransitionRow.id))) or 0
            fresh = self._clock() - self._at < self.max_age
            if self._key is not None and (key == self._key or fresh) and self._funnels.keys() >= _keys(objects):
                return self._funnels
            self._funnels = {(f.source, f.object): f for f in funnel(engine, objects)}
            self._key, self._at, self.computed_at = key, self._clock(), now
            return self._funnels


def _keys(objects: list[SyncedObject]) -> set[tuple[str, str]]:
    return {(o.source, o.name) for o in objects}


def _counted(cached: ObjectFunnel, entry: dict[str, Any]) -> ObjectFunnel:
    """The records per stage as `status` read them just now: the one column that must never lag."""
    by_stage = entry["by_stage"]
    stages = [replace(s, count=by_stage.get(s.stage, 0)) for s in cached.stages]
    return replace(cached, stages=stages)


def page_data(engine: Engine, now: datetime, cache: FunnelCache | None = None) -> list[ObjectView]:
    data = status(engine, now)
    found = states(engine, data)
    objects = engine.objects()
    funnels = (cache or FunnelCache()).get(engine, objects, now)
    views = []
    with engine.store.transaction() as session:
        for entry, state, synced in zip(data["objects"], found, objects, strict=True):
            key = (synced.source, synced.name)
            views.append(
                ObjectView(
                    source=synced.source,
                    object=synced.name,
                    state=state,
                    status=entry,
                    stage_names=list(synced.mapping.stage_names),
                    dead=dead_letters(session, *key),
                    quarantine=quarantine_groups(session, *key),
                    moves=recent_moves(session, *key),
                    funnel=_counted(funnels[key], entry),
                )
            )
    return views
