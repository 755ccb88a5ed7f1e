"""Everything the health page shows for one object, read in one go from `status`, `report funnel` and queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.engine import Engine
from connector.reports import ObjectFunnel, funnel
from connector.status import status
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


def page_data(engine: Engine, now: datetime) -> list[ObjectView]:
    data = status(engine, now)
    found = states(engine, data)
    objects = engine.objects()
    funnels = {(f.source, f.object): f for f in funnel(engine, objects)}
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
                    funnel=funnels[key],
                )
            )
    return views
