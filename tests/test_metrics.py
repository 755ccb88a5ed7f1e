"""/metrics counts a pull's moves by what caused them: the CRM's own change, or a criteria trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.config import load_config
from connector.cycle import ObjectOutcome
from connector.engine import Engine
from connector.metrics import Metrics
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store.db import open_store
from tests.support import offline_config

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MAPPING = """\
stages:
  - {name: New,     category: in_progress}
  - {name: Working, category: in_progress}
  - {name: Done,    category: succeeded}
statuses:
  Open: New
  Working: Working
  Done: Done
triggers:
  - {name: hot, on: {field: Score__c, gte: 50}, from: [New], to: Working}
"""


def test_a_pull_s_moves_are_counted_under_their_own_cause(tmp_path: Path) -> None:
    config = load_config(offline_config(tmp_path, MAPPING, database=f"sqlite:///{tmp_path}/c.db"))
    store = open_store(config.database_url)
    engine = Engine(config, store, {})
    synced = engine.synced("crm", "Lead")
    ids = ("00Q000000000001AAA", "00Q000000000002AAA")
    first = [RemoteRecord(i, "Open", T0, fields={"Score__c": 10}) for i in ids]
    engine.apply_page(synced, Page(first, Cursor(T0, ids[-1])), T0)  # the baseline
    later = T0 + timedelta(minutes=1)
    reads = [
        RemoteRecord(ids[0], "Open", later, fields={"Score__c": 70}),  # the criteria trigger moves it
        RemoteRecord(ids[1], "Done", later, fields={"Score__c": 10}),  # a person moved it in the CRM
    ]
    outcome = ObjectOutcome("crm", "Lead", pulled=engine.apply_page(synced, Page(reads, Cursor(later, ids[-1])), later))
    store.close()
    metrics = Metrics()
    metrics.observe(outcome)
    text = metrics.render().decode()
    assert 'connector_transitions_total{cause="criteria",object="Lead",source="crm"} 1.0' in text
    assert 'connector_transitions_total{cause="external",object="Lead",source="crm"} 1.0' in text
