"""`connector validate` and `connector schema` as a user runs them: exit codes, file:line messages, no traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import main
from tests.test_config import BASE, CONFIG_CASES, ENV, SECRETS, expand, write_config
from tests.test_mapping import BASE as MAPPING

REPO = Path(__file__).resolve().parents[1]
LOCATED = re.compile(r"^\S.*?:\d+: \S")  # file:line: message


def run(args: list[str], environ: dict[str, str] | None = None) -> Result:
    """Invoke the CLI with exactly these connector variables set (the others unset)."""
    given = dict(ENV) if environ is None else environ
    env: dict[str, str | None] = {name: given.get(name) for name in ENV}
    env["CONNECTOR_CONFIG"] = given.get("CONNECTOR_CONFIG")
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


BROKEN = [case for case in CONFIG_CASES if case.values[2]]
VALID = [case for case in CONFIG_CASES if not case.values[2]]


@pytest.mark.parametrize(("text", "environ", "expected"), BROKEN)
def test_validate_broken_config_exits_2_with_file_line_messages(
    tmp_path: Path, text: str, environ: dict[str, str] | None, expected: list[str]
) -> None:
    path = write_config(tmp_path, text)
    result = run(["validate", "--config", str(path)], environ)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == expand(expected, tmp_path, path)
    for line in lines:
        assert LOCATED.match(line) or line.endswith(": file not found"), line
    assert "Traceback" not in result.output
    for secret in SECRETS:
        assert secret not in result.output


@pytest.mark.parametrize(("text", "environ", "expected"), VALID)
def test_validate_good_config_exits_0(tmp_path: Path, text: str, environ: dict[str, str] | None,
                                      expected: list[str]) -> None:
    path = write_config(tmp_path, text)
    result = run(["validate", "--config", str(path)], environ)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok (2 objects, 1 mapping file)\n"
    assert result.stderr == ""
    for secret in SECRETS:
        assert secret not in result.output


def test_validate_broken_mapping_exits_2(tmp_path: Path) -> None:
    mapping = MAPPING.replace("on: email_replied,", "on: email_repled,").replace("  Dead: Lost\n", "")
    path = write_config(tmp_path, BASE, mapping=mapping)
    result = run(["validate", "--config", str(path)])
    assert result.exit_code == 2
    lead = tmp_path / "lead.yaml"
    lines = result.stderr.splitlines()
    assert lines[0] == f"{lead}:5: stage 'Lost' has no status in 'statuses'; each stage needs exactly one"
    assert lines[1].startswith(
        f"{lead}:11: triggers[0].on: unknown event 'email_repled' (did you mean 'email_replied'?); events: "
    )
    assert len(lines) == 2
    assert "Traceback" not in result.output


def test_validate_every_problem_in_one_run_in_line_order(tmp_path: Path) -> None:
    text = BASE.replace("api_budget: 50%", "api_budget: 150%").replace("{sync_every: 60s,", "{sync_every: 0d,")
    text = text.replace("    type: hubspot\n", "    type: hubspot\n    colour: orange\n")
    mapping = MAPPING.replace("sticky: true}", "sticky: yes please}")
    path = write_config(tmp_path, text, mapping=mapping)
    result = run(["validate", "--config", str(path)], {"SF_CLIENT_ID": "id", "HUBSPOT_TOKEN": SECRETS[1]})
    assert result.exit_code == 2
    lead = tmp_path / "lead.yaml"
    assert result.stderr.splitlines() == [
        f"{path}:10: sources.sfdc.auth.client_secret: environment variable SF_CLIENT_SECRET is not set",
        f"{path}:11: sources.sfdc.api_budget: bad percentage '150%': write a share such as 50% "
        "(more than 0%, at most 100%)",
        f"{path}:16: sources.hubspot.colour: unknown key 'colour'",
        f"{path}:20: schedule.sync_every: bad duration '0d': must be more than zero",
        f"{lead}:4: stages[2].sticky: 'yes please' is not true or false",
    ]
    assert SECRETS[1] not in result.output


def test_validate_warning_only_exits_0(tmp_path: Path) -> None:
    mapping = MAPPING.replace("  - {name: Lost, category: not_succeeded}\n",
                              "  - {name: Lost, category: not_succeeded}\n  - {name: lost, category: not_succeeded}\n")
    mapping = mapping.replace("  Dead: Lost\n", "  Dead: Lost\n  Gone: lost\n")
    path = write_config(tmp_path, BASE, mapping=mapping)
    result = run(["validate", "--config", str(path)])
    assert result.exit_code == 0
    assert result.stderr == f"{tmp_path / 'lead.yaml'}:6: warning: stages 'Lost' and 'lost' differ only in case\n"
    assert result.stdout == f"{path}: ok (2 objects, 1 mapping file)\n"


def test_validate_the_design_example(tmp_path: Path) -> None:
    from tests.test_config import DESIGN_CONFIG
    from tests.test_mapping import DESIGN_MAPPING

    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "salesforce-lead.yaml").write_text(DESIGN_MAPPING, encoding="utf-8")
    for name in ("salesforce-contact.yaml", "hubspot-contact.yaml"):
        (tmp_path / "mappings" / name).write_text((REPO / "mappings" / name).read_text(encoding="utf-8"))
    path = tmp_path / "config.yaml"
    path.write_text(DESIGN_CONFIG, encoding="utf-8")
    result = run(["validate", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok (3 objects, 3 mapping files)\n"
    for secret in SECRETS:
        assert secret not in result.output


def test_validate_repository_example() -> None:
    result = run(["validate", "--config", str(REPO / "config.example.yaml")], {})
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{REPO / 'config.example.yaml'}: ok (5 objects, 5 mapping files)\n"
    assert result.stderr == ""


def test_validate_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = run(["validate", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"{path}: file not found\n"
    assert "Traceback" not in result.output


def test_validate_reads_connector_config_then_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "etc", BASE)
    result = run(["validate"], {**ENV, "CONNECTOR_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{path}: ok")

    monkeypatch.chdir(tmp_path / "etc")
    result = run(["validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("config.yaml: ok")

    monkeypatch.chdir(tmp_path)
    result = run(["validate"])
    assert result.exit_code == 2
    assert result.stderr == "config.yaml: file not found\n"


@pytest.mark.parametrize("text", ["---\n", "null\n"], ids=["dashes", "null"])
def test_validate_null_document_says_what_is_wrong(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, text)
    result = run(["validate", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:1: ")


def test_validate_bad_now_is_a_usage_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, BASE)
    result = run(["validate", "--config", str(path), "--now", "yesterday"])
    assert result.exit_code == 2
    assert "'yesterday' is not an ISO 8601 instant" in result.stderr
    assert "Traceback" not in result.output


def test_schema_command_writes_both_schemas_matching_the_committed_ones(tmp_path: Path) -> None:
    out = tmp_path / "schema"
    result = CliRunner().invoke(main, ["schema", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"wrote {out / 'config.schema.json'}", f"wrote {out / 'mapping.schema.json'}"]
    for name in ("config.schema.json", "mapping.schema.json"):
        generated = (out / name).read_text(encoding="utf-8")
        schema = json.loads(generated)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        committed = (REPO / "schema" / name).read_text(encoding="utf-8")
        assert generated == committed, f"schema/{name} is stale: run `connector schema`"
    config_schema = json.loads((out / "config.schema.json").read_text(encoding="utf-8"))
    assert config_schema["required"] == ["sources"]
    assert {"database", "sources", "schedule", "writeback"} <= set(config_schema["properties"])
    mapping_schema = json.loads((out / "mapping.schema.json").read_text(encoding="utf-8"))
    assert {"stages", "statuses", "triggers", "overrides"} <= set(mapping_schema["properties"])
    trigger = mapping_schema["$defs"]["ActivityTrigger"]["properties"]
    assert "from" in trigger and "from_stages" not in trigger  # the key people write


def test_python_dash_m_connector_validate() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV and k != "CONNECTOR_CONFIG"}
    completed = subprocess.run(
        [sys.executable, "-m", "connector", "validate", "--config", "config.example.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "config.example.yaml: ok (5 objects, 5 mapping files)\n"
    assert "Traceback" not in completed.stderr
