"""A Salesforce sandbox with a config.yaml pointing at it, and the real engine, store and source over it.

For engine tests of the first sync over an org with a past (DESIGN rule 4), `World.seed_months(obj, n)`
fills the sandbox with `n` records created over the last months, their status changes as field
history (tracking on), and Tasks / Events dated in the past; it returns what it made
(`connector.sandbox.salesforce_history.History`: per record its created, modified and last status
change dates, and its activity dates), so a test can check that the first sync moves and writes
nothing, and that `enroll_existing` starts each clock from the status's last change.
`World.late_edit(...)` makes a person's edit that commits `seconds` late (a long transaction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from connector.config import Config, SalesforceSource, SyncedObject, load_config
from connector.cycle import Jobs, ObjectOutcome
from connector.engine import Engine
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox.salesforce_history import History, seed_history
from connector.sources.salesforce import Salesforce
from connector.store.db import Store, open_store
from connector.writeback import Drain, DrainStats

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
T0 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)
SOURCE = "sfdc"
OBJECTS = {
    "Lead": {"status_field": "Status", "mapping": str(MAPPINGS / "salesforce-lead.yaml")},
    "Contact": {"status_field": "Stage__c", "mapping": str(MAPPINGS / "salesforce-contact.yaml")},
    "Account": {"status_field": "Account_Stage__c", "mapping": str(MAPPINGS / "salesforce-account.yaml")},
}


class Clock:
    """One instant shared by the sandbox (SystemModstamp) and the engine (`now`), moved by the test."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def sandbox_token(sandbox: SalesforceSandbox) -> str:
    """An access token obtained the way an admin would, for `auth: {method: token}`."""
    with requests.Session() as http:
        http.trust_env, http.verify = False, sandbox.ca_pem
        answer = http.post(
            sandbox.url + "/services/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(sandbox.client_id, sandbox.client_secret),
        )
        answer.raise_for_status()
        token: str = answer.json()["access_token"]
        return token


def auth_block(sandbox: SalesforceSandbox, method: str) -> dict[str, Any]:
    login = {"login_url": sandbox.url, "client_id": sandbox.client_id}
    if method == "token":
        return {"method": "token", "access_token": sandbox_token(sandbox), "instance_url": sandbox.url}
    if method == "client_credentials":
        return {"method": method, **login, "client_secret": sandbox.client_secret}
    if method == "password":
        return {"method": method, **login, "client_secret": sandbox.client_secret, "username": sandbox.username,
                "password": sandbox.password}
    if method == "jwt":
        return {"method": method, **login, "username": sandbox.username,
                "private_key_file": sandbox.jwt_private_key_pem}
    raise ValueError(method)


def write_config(
    folder: Path,
    sandbox: SalesforceSandbox,
    db_url: str,
    *,
    auth: str = "client_credentials",
    objects: dict[str, Any] | None = None,
    **source: Any,
) -> Path:
    """config.yaml in `folder` (JSON is YAML), with the repo's mapping files by absolute path."""
    settings = {
        "type": "salesforce",
        "instance_url": sandbox.url,
        "api_version": "62.0",
        "auth": auth_block(sandbox, auth),
        "ca_bundle": sandbox.ca_pem,
        "objects": objects or {"Lead": OBJECTS["Lead"]},
        **source,
    }
    config = {"database": db_url, "sources": {SOURCE: settings}, "writeback": {"conflict_check": True}}
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def no_sleep(sleeps: list[float]) -> Any:
    return sleeps.append


@dataclass
class World:
    """The sandbox, the config and a running engine over them; `close()` releases everything."""

    sandbox: SalesforceSandbox
    config_path: Path
    config: Config
    store: Store
    source: Salesforce
    engine: Engine
    clock: Clock
    sleeps: list[float] = field(default_factory=list)

    @classmethod
    def open(cls, folder: Path, db_url: str | None = None, *, latency: float = 0.0, daily_limit: int = 5_000_000,
             **config: Any) -> World:
        sandbox = SalesforceSandbox(latency=latency, daily_limit=daily_limit)
        clock = Clock()
        sandbox.clock = clock
        sandbox.start()
        try:
            path = write_config(folder, sandbox, db_url or f"sqlite:///{folder}/connector.db", **config)
            loaded = load_config(path)
            store = open_store(loaded.database_url)
        except BaseException:
            sandbox.stop()
            raise
        sandbox.server.reset_calls()  # the admin's own login for `auth: token` is not the connector's
        sleeps: list[float] = []
        settings = loaded.sources[SOURCE]
        assert isinstance(settings, SalesforceSource)
        source = Salesforce(SOURCE, settings, sleep=sleeps.append)
        engine = Engine(loaded, store, {SOURCE: source})
        engine.clock = clock  # the wall clock a pull reads up to is the test's, as the sandbox's is
        return cls(sandbox, path, loaded, store, source, engine, clock, sleeps)

    def close(self) -> None:
        self.source.close()
        self.store.close()
        self.sandbox.stop()

    def synced(self, obj: str = "Lead") -> SyncedObject:
        return self.engine.synced(SOURCE, obj)

    def cycle(self, obj: str = "Lead", seconds: float = 1.0) -> ObjectOutcome:
        """One `sync --once` for one object, a little later than the last."""
        return Jobs(self.engine).once(self.synced(obj), self.clock.advance(seconds))

    def drain(self, obj: str = "Lead", seconds: float = 1.0) -> DrainStats:
        drain = Drain(self.store, self.source, self.config.model.writeback)
        return drain.run(self.synced(obj), self.clock.advance(seconds))

    def seed_leads(self, n: int, **fields: Any) -> list[str]:
        return self.sandbox.seed("Lead", leads(n, **fields), modstamp=self.clock.now)

    def seed_months(self, obj: str = "Lead", count: int = 50, **options: Any) -> History:
        """`count` records with months of past life before now (see the module docstring)."""
        return seed_history(self.sandbox, obj, count, now=self.clock.now, **options)

    def late_edit(self, seconds: float, obj: str, record_id: str, **fields: Any) -> None:
        """A person's edit stamped now that the API sees only `seconds` later, behind newer records."""
        with self.sandbox.long_transaction(seconds):
            self.sandbox.edit_as_person(obj, record_id, **fields)


def leads(n: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"LastName": f"Lead {i}", "Company": "Acme", "Email": f"lead{i}@example.com", **fields} for i in range(n)]

