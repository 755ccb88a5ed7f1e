"""What the HubSpot tests and the benchmark share: a started sandbox, a config.yaml that points at it,
and the real connector (config, store, HubSpot source, engine, jobs) opened on that config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select

from connector.config import Config, HubSpotSource, SyncedObject, load_config
from connector.cycle import Jobs, ObjectOutcome
from connector.engine import Engine
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sources.hubspot import HubSpot
from connector.store import repo
from connector.store.db import Store, open_store
from connector.store.schema import OutboxItem, TransitionRow

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
LEAD_STATUS = f"{{status_field: hs_lead_status, mapping: {MAPPINGS / 'hubspot-contact.yaml'}}}"
LIFECYCLE = f"{{status_field: lifecyclestage, mapping: {MAPPINGS / 'hubspot-contact-lifecycle.yaml'}}}"
T0 = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


class SandboxClock:
    """The sandbox's idea of now, stepped by the test: HubSpot stamps modified dates with it."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@contextmanager
def started_sandbox(**options: Any) -> Iterator[HubSpotSandbox]:
    with HubSpotSandbox(**options) as sandbox:
        yield sandbox


def fresh_portal(sandbox: HubSpotSandbox, clock: SandboxClock) -> None:
    """An empty portal with no limits, so that none is hit by chance; tests set the ones they need."""
    sandbox.reset()
    sandbox.server.faults.clear()
    sandbox.server.latency = 0.0
    sandbox.clock = clock
    sandbox.rate_limit, sandbox.rate_window, sandbox.search_rate_per_second = 0, 10.0, 0
    sandbox.daily_limit, sandbox.lifecycle_backwards = 1_000_000, "ignore"


class Portal(Protocol):
    """Where a config points: the sandbox, or the benchmark's sandbox in another process."""

    @property
    def url(self) -> str: ...

    @property
    def token(self) -> str: ...


def write_config(
    folder: Path,
    sandbox: Portal,
    database: str,
    objects: dict[str, str] | None = None,
    source: str = "",
) -> Path:
    """config.yaml for one HubSpot source `hubspot` on the sandbox. `objects`: name -> flow YAML;
    `source`: more YAML lines of source settings (lookback, api_budget, ...)."""
    listed = "".join(f"      {name}: {spec}\n" for name, spec in (objects or {"contacts": LEAD_STATUS}).items())
    extra = "".join(f"    {line}\n" for line in source.strip().splitlines())
    path = folder / "config.yaml"
    path.write_text(
        f"database: {database}\n"
        "sources:\n"
        "  hubspot:\n"
        "    type: hubspot\n"
        f"    base_url: {sandbox.url}\n"
        f"    auth: {{method: token, access_token: {sandbox.token}}}\n"
        f"{extra}"
        "    objects:\n"
        f"{listed}"
        "writeback: {enabled: true, conflict_check: true, max_attempts: 8}\n"
    )
    return path


@dataclass
class Connector:
    """The real connector on one config: what `connector sync --once` builds."""

    config: Config
    store: Store
    source: HubSpot
    engine: Engine
    jobs: Jobs
    outcomes: list[ObjectOutcome] = field(default_factory=list)

    def synced(self, obj: str = "contacts") -> SyncedObject:
        return self.config.object("hubspot", obj)

    def cycle(self, now: datetime, obj: str = "contacts") -> ObjectOutcome:
        outcome = self.jobs.once(self.synced(obj), now)
        self.outcomes.append(outcome)
        return outcome

    def record(self, external_id: str, obj: str = "contacts") -> repo.StoredRecord:
        with self.store.transaction() as session:
            found = repo.get_record(session, "hubspot", obj, external_id)
        assert found is not None, f"no record {external_id}"
        return found

    def stages(self, obj: str = "contacts") -> dict[str | None, int]:
        with self.store.transaction() as session:
            return repo.stage_counts(session, "hubspot", obj)

    def transitions(self) -> int:
        with self.store.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(TransitionRow)) or 0)

    def outbox(self) -> list[OutboxItem]:
        with self.store.transaction() as session:
            return list(session.scalars(select(OutboxItem).order_by(OutboxItem.id)))

    def outbox_states(self) -> dict[str, int]:
        states: dict[str, int] = {}
        for item in self.outbox():
            states[item.state] = states.get(item.state, 0) + 1
        return states


@contextmanager
def open_connector(config_path: Path, **source_options: Any) -> Iterator[Connector]:
    """`source_options` reach HubSpot(...): retry_sleep, pace_sleep, clock, searches_per_second."""
    config = load_config(config_path)
    settings = config.sources["hubspot"]
    assert isinstance(settings, HubSpotSource)
    store = open_store(config.database_url)
    source = HubSpot("hubspot", settings, **source_options)
    try:
        engine = Engine(config, store, {"hubspot": source})
        yield Connector(config, store, source, engine, Jobs(engine))
    finally:
        source.close()
        store.close()


def no_wait(_seconds: float) -> None:
    """A retry sleep for tests where waiting is not the point."""


def contacts(count: int, **values: Any) -> list[dict[str, Any]]:
    return [{"email": f"p{n}@example.com", "firstname": f"P{n}", **values} for n in range(count)]


def calls_to(sandbox: HubSpotSandbox, method: str, suffix: str) -> int:
    return sum(1 for c in sandbox.server.calls() if c.method == method and c.path.endswith(suffix))


Clock = Callable[[], datetime]
