"""What the HubSpot tests and the benchmark share: a started sandbox, a config.yaml that points at it,
the real connector (config, store, HubSpot source, engine, jobs) opened on that config, and a portal
with months of history (`seed_history`) for the first-sync tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, Protocol

import pytest
from sqlalchemy import func, select

from connector.config import Config, HubSpotSource, SyncedObject, load_config
from connector.cycle import Jobs, ObjectOutcome
from connector.engine import Engine
from connector.sandbox.hubspot import LEAD_STATUSES, LIFECYCLE_STAGES, HubSpotSandbox
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


# Fixtures the HubSpot end-to-end files share (import them by name; each file keeps its own `sandbox`,
# the per-test setup of the portal it needs).
@pytest.fixture(scope="module")
def server() -> Iterator[HubSpotSandbox]:
    """One sandbox for the module (stopping one takes half a second); a fresh portal per test."""
    with started_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def clock() -> SandboxClock:
    return SandboxClock()


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
    """`source_options` reach HubSpot(...): retry_sleep, pace_sleep, clock, searches_per_second, list_first."""
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


# --- a portal with a past ----------------------------------------------------------------------------
ENGAGEMENT_KINDS = {
    "emails": {"hs_email_direction": "INCOMING_EMAIL", "hs_email_subject": "Re: our call"},
    "calls": {"hs_call_status": "COMPLETED", "hs_call_title": "Intro call"},
    "meetings": {"hs_meeting_outcome": "COMPLETED", "hs_meeting_title": "Demo"},
}


@dataclass
class History:
    """What `seed_history` made: ids by object type, and the instant everything is before."""

    now: datetime
    contacts: list[str]
    companies: list[str]
    engagements: dict[str, list[str]]  # emails / calls / meetings -> ids
    last_changed: dict[str, datetime]  # contact or company id -> when its status was last set

    @property
    def activity(self) -> int:
        return sum(len(ids) for ids in self.engagements.values())


def seed_history(
    sandbox: HubSpotSandbox,
    now: datetime = T0,
    *,
    contacts: int = 60,
    companies: int = 12,
    months: int = 6,
    engagements_per_record: int = 2,
    seed: int = 7,
) -> History:
    """A portal that has been in use for `months`: contacts and companies created over those months and
    last modified at least a day before `now`; each contact's `hs_lead_status` and `lifecyclestage`
    and each company's `company_stage` set twice (at creation, then weeks later), with property history
    and lifecycle entry dates to match; and emails, calls and meetings (`hs_timestamp`, created and
    modified on the day they happened, all in the past) associated with them. Nothing here is newer
    than `now - 1 day`, so a first sync at `now` must move nothing and write nothing (DESIGN rule 4)."""
    rng = Random(seed)
    span = timedelta(days=30 * months)

    def past(after: datetime | None = None) -> datetime:
        start = after or now - span
        room = (now - timedelta(days=1)) - start
        return start + room * rng.uniform(0.05, 0.95)

    made: dict[str, list[str]] = {}
    changed: dict[str, datetime] = {}
    statuses = [v for v, _ in LEAD_STATUSES]
    stages = [v for v, _ in LIFECYCLE_STAGES[:6]]
    plan_of = (("contacts", contacts, "hs_lead_status"), ("companies", companies, "company_stage"))
    for kind, count, field_name in plan_of:
        rows, plans = [], []
        options = statuses if kind == "contacts" else ["target", "engaged", "customer", "lost"]
        for n in range(count):
            created = past()
            later = past(created)
            first, last = rng.choice(options), rng.choice(options)
            steps = sorted(rng.sample(range(len(stages)), 2))
            row: dict[str, Any] = {field_name: last, "createdate": created, _modified(kind): later}
            row.update(
                {"email": f"h{n}@example.com", "firstname": f"H{n}"}
                if kind == "contacts"
                else {"name": f"Company {n}", "domain": f"c{n}.example.com"}
            )
            rows.append(row)
            plans.append([
                (field_name, first, created),
                ("lifecyclestage", stages[steps[0]], created),
                (field_name, last, later),
                ("lifecyclestage", stages[steps[1]], later),
            ])  # fmt: skip
        ids = sandbox.seed(kind, rows)
        for record_id, plan in zip(ids, plans, strict=True):
            sandbox.backdate(kind, record_id, plan)
            changed[record_id] = plan[-1][2]
        made[kind] = ids
    engagements: dict[str, list[str]] = {k: [] for k in ENGAGEMENT_KINDS}
    owners = [("contact", i) for i in made["contacts"]] + [("company", i) for i in made["companies"]]
    for owner, record_id in owners:
        for _ in range(engagements_per_record):
            kind = rng.choice(sorted(ENGAGEMENT_KINDS))
            at = past()
            row = {**ENGAGEMENT_KINDS[kind], "hs_timestamp": at, "hs_createdate": at, "hs_lastmodifieddate": at}
            engagements[kind] += sandbox.seed(kind, [{**row, f"associations.{owner}": record_id}])
    return History(now, made["contacts"], made["companies"], engagements, changed)


@pytest.fixture
def hubspot_history(sandbox: HubSpotSandbox, clock: SandboxClock) -> History:
    """A portal six months old (`seed_history`), all of it dated before the test's sandbox clock.
    Import it into a test module that defines the `sandbox` and `clock` fixtures (as the HubSpot e2e
    modules do): `from tests.hubspot_support import hubspot_history`."""
    return seed_history(sandbox, clock.now)


def _modified(kind: str) -> str:
    return "lastmodifieddate" if kind == "contacts" else "hs_lastmodifieddate"
