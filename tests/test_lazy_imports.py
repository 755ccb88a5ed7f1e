"""The commands a person runs most start at once: a guard on what they import, counted, not timed.

`connector --help`, `status` and `explain` run in a fresh interpreter; none may import the CRM
clients, alembic (and mako), matplotlib, rich or pygments, and `--help` stays within a module budget.
`status` reads the store with plain SQL (connector/store/glance.py): on a SQLite store at head it
imports neither SQLAlchemy nor the engine and the rules, only the config's validation (pydantic).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import offline_config

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("alembic", "mako", "matplotlib", "rich", "pygments", "simple_salesforce", "hubspot", "requests",
             "urllib3", "apscheduler")
HELP_BUDGET = 200  # modules after `connector --help` (about 130 today; the CLI once imported 750)
STATUS_BUDGET = 350  # after `connector status` (about 290 today; 508 with the engine and the ORM)
EXPLAIN_BUDGET = 560  # after `connector explain` (about 500 today: it still reads through the ORM)
# What `status` leaves out: SQLAlchemy (its import alone costs more than the rest of the command), the
# engine and the rules it would bring.
NOT_FOR_STATUS = ("sqlalchemy", "connector.engine", "connector.rules", "connector.store.repo", "tenacity")

PROBE = """
import json, sys
from connector.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def loaded(modules: set[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(FORBIDDEN))


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store at the schema's head with one record, made in this process (so migrations ran here)."""
    from datetime import UTC, datetime

    from connector.config import load_config
    from connector.engine import Engine
    from connector.sources.base import Cursor, Page, RemoteRecord
    from connector.store.db import open_store

    folder = tmp_path_factory.mktemp("lazy")
    path = offline_config(folder, (ROOT / "mappings/salesforce-lead.yaml").read_text(), database="sqlite:///c.db",
                          source="sfdc")
    loaded_config = load_config(path)
    store = open_store(loaded_config.database_url)
    at = datetime(2026, 3, 2, tzinfo=UTC)
    engine = Engine(loaded_config, store, {})
    engine.apply_page(engine.synced("sfdc", "Lead"), Page([RemoteRecord("L1", "Open - Not Contacted", at)],
                                                          Cursor(at, "L1")), at)
    store.close()
    return path


def test_help_imports_little() -> None:
    modules = modules_after("--help")
    assert loaded(modules) == []
    assert "sqlalchemy" not in modules and "pydantic" not in modules
    assert len(modules) <= HELP_BUDGET, len(modules)


@pytest.mark.parametrize("command", [["status"], ["status", "--json"]])
def test_status_reads_the_store_without_sqlalchemy_or_the_engine(config: Path, command: list[str]) -> None:
    modules = modules_after(*command, "--config", str(config))
    assert "connector.store.glance" in modules  # the command did run
    assert loaded(modules) == []
    assert [m for m in NOT_FOR_STATUS if m in modules] == []
    assert len(modules) <= STATUS_BUDGET, len(modules)


def test_status_of_a_store_to_migrate_still_migrates(tmp_path: Path) -> None:
    """The fast path is for a store at head; a new database is created and migrated as by any command."""
    path = offline_config(tmp_path, (ROOT / "mappings/salesforce-lead.yaml").read_text(),
                          database="sqlite:///new.db", source="sfdc")
    done = subprocess.run([sys.executable, "-m", "connector", "status", "--json", "--config", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["objects"][0]["records"] == 0
    assert (tmp_path / "new.db").is_file()


def test_explain_imports_no_client_no_alembic(config: Path) -> None:
    modules = modules_after("explain", "sfdc", "Lead", "L1", "--config", str(config))
    assert "connector.store.repo" in modules  # the command did run
    assert loaded(modules) == []
    assert len(modules) <= EXPLAIN_BUDGET, len(modules)
