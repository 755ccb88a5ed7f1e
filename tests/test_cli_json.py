"""`--json` on `import` and `validate`: one JSON document on stdout, errors included."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main
from connector.engine import Engine
from tests.support import offline_config
from tests.test_importer import setup  # noqa: F401  (the fixture: a store with leads L1..L6)
from tests.test_mapping import BASE as MAPPING


def test_import_json_summarises_with_every_reject(setup: tuple[Path, Engine, object]) -> None:  # noqa: F811
    config, _engine, _ = setup
    csv_path = config.parent / "leads.csv"
    csv_path.write_text("Id,Stage\nL1,Working\nL9,Working\nL2,Nope\n")
    result = CliRunner().invoke(
        main, ["import", str(csv_path), "--source", "sfdc", "--object", "Lead", "--json", "--config", str(config)]
    )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["rows"] == 3 and data["applied"] == 1 and data["rejected"] == 2 and data["writebacks_queued"] == 1
    assert [r["line"] for r in data["rejects"]] == [3, 4]
    assert "L9" in data["rejects"][0]["reason"] and data["rejects_file"].endswith("leads.rejects.csv")


def test_validate_json_lists_problems_as_objects(tmp_path: Path) -> None:
    config = offline_config(tmp_path, MAPPING.replace("category: succeeded", "category: sucess", 1))
    config.write_text(config.read_text() + "    ca_bundle: nowhere.pem\n")
    result = CliRunner().invoke(main, ["validate", "--json", "--config", str(config)])
    assert result.exit_code == 2 and result.stderr == ""
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["config"] == str(config)
    for problem in data["problems"]:
        assert set(problem) == {"file", "line", "key", "message", "severity"}
        assert isinstance(problem["line"], int)
    category = next(p for p in data["problems"] if "sucess" in p["message"])
    assert category["file"] == str(tmp_path / "mapping.yaml") and category["key"].startswith("stages[")
    missing = next(p for p in data["problems"] if p["key"] == "sources.crm.ca_bundle")
    assert missing["file"] == str(config) and "nowhere.pem" in missing["message"]


def test_validate_json_ok(tmp_path: Path) -> None:
    config = offline_config(tmp_path, MAPPING)
    result = CliRunner().invoke(main, ["validate", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "config": str(config), "objects": 1, "problems": []}
