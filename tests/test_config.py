"""config.yaml: the design's own example, `${ENV}` and secrets, paths, and every message for a broken one.

Each broken case lists the exact lines a user sees (`file:line: message`), in the order `validate`
prints them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from connector.config import (
    ClientCredentialsAuth,
    Config,
    HubSpotSource,
    HubSpotTokenAuth,
    JwtAuth,
    SalesforceSource,
    load_config,
)
from connector.errors import ConfigError, Problem
from tests.test_mapping import BASE as MAPPING
from tests.test_mapping import DESIGN_MAPPING, KEYS, WORDS, documents, scalars

REPO = Path(__file__).resolve().parents[1]

# The config.yaml example from DESIGN.md, as written there.
DESIGN_CONFIG = """\
database: sqlite:///connector.db       # default; postgresql+psycopg://user@host/db for servers
sources:
  sfdc:                                  # a source's name: used in every CLI command
    type: salesforce
    instance_url: https://acme.my.salesforce.com
    api_version: "62.0"
    auth:                                # method: token | client_credentials | jwt | password
      method: client_credentials
      login_url: https://acme.my.salesforce.com
      client_id: ${SF_CLIENT_ID}
      client_secret: ${SF_CLIENT_SECRET}
    ca_bundle: null                      # a PEM file to trust (corporate proxy, a sandbox)
    api_budget: 50%                      # share of the org's daily API allocation we may use
    objects:
      Lead:    {status_field: Status, mapping: mappings/salesforce-lead.yaml}
      Contact: {status_field: Stage__c, mapping: mappings/salesforce-contact.yaml}
  hubspot:
    type: hubspot
    base_url: https://api.hubapi.com
    auth: {method: token, access_token: ${HUBSPOT_TOKEN}}
    objects:
      contacts: {status_field: hs_lead_status, mapping: mappings/hubspot-contact.yaml}
schedule: {sync_every: 60s, writeback_every: 10s, timers_every: 15m, reconcile_every: 24h}
writeback: {enabled: true, conflict_check: true, max_attempts: 8}
"""

# Secret values: none of them may ever appear in a message, a repr or CLI output.
ENV = {
    "SF_CLIENT_ID": "3MVG9-client-id",
    "SF_CLIENT_SECRET": "sf-secret-7f3a9c1e",
    "HUBSPOT_TOKEN": "pat-na1-hs-secret-b42d",
}
SECRETS = ("sf-secret-7f3a9c1e", "pat-na1-hs-secret-b42d")

# A small valid config the broken cases are derived from; line numbers below refer to it.
BASE = """\
database: sqlite:///connector.db
sources:
  sfdc:
    type: salesforce
    instance_url: https://acme.my.salesforce.com
    api_version: "62.0"
    auth:
      method: client_credentials
      client_id: ${SF_CLIENT_ID}
      client_secret: ${SF_CLIENT_SECRET}
    api_budget: 50%
    objects:
      Lead: {status_field: Status, mapping: lead.yaml}
  hubspot:
    type: hubspot
    auth: {method: token, access_token: ${HUBSPOT_TOKEN}}
    objects:
      contacts: {status_field: hs_lead_status, mapping: lead.yaml}
schedule: {sync_every: 60s, writeback_every: 10s, timers_every: 15m, reconcile_every: 24h}
writeback: {enabled: true, conflict_check: true, max_attempts: 8}
"""

DURATION_HINT = "write a number and a unit, such as 90s, 15m, 2h, 14d or 1w"
PERCENT_HINT = "write a share such as 50% (more than 0%, at most 100%)"


def _replace(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def write_config(folder: Path, text: str, mapping: str | None = MAPPING, name: str = "config.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if mapping is not None:
        (folder / "lead.yaml").write_text(mapping, encoding="utf-8")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def messages(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """What `validate` prints for this config: [] when it loads, with warnings listed too."""
    try:
        config = load_config(path, dict(ENV) if environ is None else environ)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return [str(p) for p in config.warnings]


def expand(lines: list[str], folder: Path, config: Path) -> list[str]:
    return [line.replace("{f}", str(config)).replace("{dir}", str(folder)) for line in lines]


CONFIG_CASES = [
    pytest.param(BASE, None, [], id="valid"),
    pytest.param(
        _replace("      Lead: {status_field: Status, mapping: lead.yaml}\n",
                 "      Lead: {status_field: Status, mapping: lead.yaml\n"),
        None,
        ["{f}:14: YAML syntax error: while parsing a flow mapping expected ',' or '}', but got ':'"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        _replace("    type: hubspot\n", "    type: hubspot\n\tpage_size: 10\n"),
        None,
        ["{f}:16: YAML syntax error: while scanning for the next token "
         "found character '\\t' that cannot start any token"],
        id="tab-indentation",
    ),
    pytest.param(
        BASE + "writebak: {enabled: false}\n",
        None,
        ["{f}:21: writebak: unknown key 'writebak' (did you mean 'writeback'?)"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        _replace("    api_budget: 50%\n", "    api_budjet: 50%\n"),
        None,
        ["{f}:11: sources.sfdc.api_budjet: unknown key 'api_budjet' (did you mean 'api_budget'?)"],
        id="unknown-key-in-source",
    ),
    pytest.param(
        _replace("{status_field: Status, mapping: lead.yaml}", "{status_feild: Status, mapping: lead.yaml}"),
        None,
        [
            "{f}:13: sources.sfdc.objects.Lead.status_field: missing required key 'status_field'",
            "{f}:13: sources.sfdc.objects.Lead.status_feild: unknown key 'status_feild' (did you mean 'status_field'?)",
        ],
        id="unknown-key-in-object",
    ),
    pytest.param(
        _replace("      client_id: ${SF_CLIENT_ID}\n", "      client_id: ${SF_CLIENT_ID}\n      scope: api\n"),
        None,
        ["{f}:10: sources.sfdc.auth.scope: unknown key 'scope'"],
        id="unknown-key-in-auth",
    ),
    pytest.param(
        BASE.replace("{enabled: true, conflict_check: true, max_attempts: 8}", "{enabeld: true, max_attempts: 8}"),
        None,
        ["{f}:20: writeback.enabeld: unknown key 'enabeld' (did you mean 'enabled'?)"],
        id="unknown-key-in-writeback",
    ),
    pytest.param(
        _replace("    type: hubspot\n", "    type: pipedrive\n"),
        None,
        ["{f}:15: sources.hubspot.type: 'pipedrive' is not one of 'salesforce', 'hubspot'"],
        id="unknown-source-type",
    ),
    pytest.param(
        _replace("  hubspot:\n    type: hubspot\n", "  hubspot:\n"),
        None,
        ["{f}:14: sources.hubspot: missing required key 'type'"],
        id="source-without-type",
    ),
    pytest.param(
        _replace("      method: client_credentials\n", "      method: oauth2\n"),
        None,
        ["{f}:8: sources.sfdc.auth.method: 'oauth2' is not one of 'token', 'client_credentials', 'jwt', 'password'"],
        id="unknown-salesforce-auth-method",
    ),
    pytest.param(
        _replace("{method: token, access_token:", "{method: oauth, access_token:"),
        None,
        ["{f}:16: sources.hubspot.auth.method: 'oauth' is not one of 'token'"],
        id="unknown-hubspot-auth-method",
    ),
    pytest.param(
        _replace("{method: token, access_token:", "{access_token:"),
        None,
        ["{f}:16: sources.hubspot.auth: missing required key 'method'"],
        id="auth-without-method",
    ),
    pytest.param(
        BASE,
        {"SF_CLIENT_ID": "3MVG9-client-id", "HUBSPOT_TOKEN": "pat-na1-hs-secret-b42d"},
        ["{f}:10: sources.sfdc.auth.client_secret: environment variable SF_CLIENT_SECRET is not set"],
        id="missing-env-var",
    ),
    pytest.param(
        BASE,
        {"SF_CLIENT_ID": "3MVG9-client-id", "SF_CLIENT_SECRET": "sf-secret-7f3a9c1e"},
        ["{f}:16: sources.hubspot.auth.access_token: environment variable HUBSPOT_TOKEN is not set"],
        id="missing-env-var-in-flow-mapping",
    ),
    pytest.param(
        BASE,
        {},
        [
            "{f}:9: sources.sfdc.auth.client_id: environment variable SF_CLIENT_ID is not set",
            "{f}:10: sources.sfdc.auth.client_secret: environment variable SF_CLIENT_SECRET is not set",
            "{f}:16: sources.hubspot.auth.access_token: environment variable HUBSPOT_TOKEN is not set",
        ],
        id="every-missing-env-var",
    ),
    pytest.param(
        _replace("${SF_CLIENT_SECRET}", "${SF_CLIENT_SECRET:-fallback}"),
        {"SF_CLIENT_ID": "3MVG9-client-id", "HUBSPOT_TOKEN": "pat-na1-hs-secret-b42d"},
        [],
        id="env-default",
    ),
    pytest.param(
        _replace("client_secret: ${SF_CLIENT_SECRET}", "client_secret: 123456789"),
        None,
        ["{f}:10: sources.sfdc.auth.client_secret: must be text"],
        id="secret-of-the-wrong-type-is-not-echoed",
    ),
    pytest.param(
        _replace("{sync_every: 60s,", "{sync_every: 10 days,"),
        None,
        [f"{{f}}:19: schedule.sync_every: bad duration '10 days': {DURATION_HINT}"],
        id="bad-duration-10-days",
    ),
    pytest.param(
        _replace("timers_every: 15m,", "timers_every: 0d,"),
        None,
        ["{f}:19: schedule.timers_every: bad duration '0d': must be more than zero"],
        id="bad-duration-0d",
    ),
    pytest.param(
        _replace("reconcile_every: 24h}", "reconcile_every: 14}"),
        None,
        [f"{{f}}:19: schedule.reconcile_every: bad duration 14: {DURATION_HINT}"],
        id="bad-duration-14",
    ),
    pytest.param(
        _replace("api_budget: 50%", "api_budget: 150%"),
        None,
        [f"{{f}}:11: sources.sfdc.api_budget: bad percentage '150%': {PERCENT_HINT}"],
        id="bad-percent-150",
    ),
    pytest.param(
        _replace("api_budget: 50%", "api_budget: 50"),
        None,
        [f"{{f}}:11: sources.sfdc.api_budget: bad percentage 50: {PERCENT_HINT}"],
        id="bad-percent-50-without-sign",
    ),
    pytest.param(
        _replace("api_budget: 50%", "api_budget: 0%"),
        None,
        [f"{{f}}:11: sources.sfdc.api_budget: bad percentage '0%': {PERCENT_HINT}"],
        id="bad-percent-0",
    ),
    pytest.param(
        _replace("enabled: true,", "enabled: yes please,"),
        None,
        ["{f}:20: writeback.enabled: 'yes please' is not true or false"],
        id="bool-yes-please",
    ),
    pytest.param(
        _replace("max_attempts: 8}", "max_attempts: 0}"),
        None,
        ["{f}:20: writeback.max_attempts: Input should be greater than or equal to 1"],
        id="max-attempts-zero",
    ),
    pytest.param(
        _replace("    objects:\n      Lead: {status_field: Status, mapping: lead.yaml}\n", "    objects: {}\n"),
        None,
        ["{f}:12: sources.sfdc.objects: must list at least one"],
        id="source-without-objects",
    ),
    pytest.param(
        _replace("mapping: lead.yaml}", "mapping: missing.yaml}"),
        None,
        ["{f}:13: sources.sfdc.objects.Lead.mapping: mapping file not found: {dir}/missing.yaml"],
        id="mapping-file-not-found",
    ),
    pytest.param(
        _replace("mapping: lead.yaml}", "mapping: ./lead.yaml}"),
        None,
        [],
        id="mapping-path-with-dots",
    ),
    pytest.param(
        _replace("    api_budget: 50%\n", "    api_budget: 50%\n    webhooks: {organization_id: 00Dabc}\n"),
        None,
        ["{f}:12: sources.sfdc.webhooks.organization_id: organization_id is the org's id: 15 or 18 letters and "
         "digits starting with 00D (Setup > Company Information > Salesforce.com Organization ID)"],
        id="webhooks-org-id",
    ),
    pytest.param(
        _replace("    auth: {method: token, access_token: ${HUBSPOT_TOKEN}}\n",
                 "    auth: {method: token, access_token: ${HUBSPOT_TOKEN}}\n"
                 "    webhooks: {app_secret: ${HUBSPOT_TOKEN}, url: connector.example.com/webhooks}\n"),
        None,
        ["{f}:17: sources.hubspot.webhooks.url: url is the target URL as registered in the HubSpot app, e.g. "
         "https://connector.example.com/webhooks/hubspot"],
        id="webhooks-hubspot-url",
    ),
    pytest.param(
        BASE + "server: {listen: 127.0.0.1:9108, webhooks: 0.0.0.0}\n",
        None,
        ["{f}:21: server.webhooks: '0.0.0.0' is not HOST:PORT, e.g. 127.0.0.1:9108"],
        id="webhooks-address",
    ),
    pytest.param("", None, ["{f}:1: sources: missing required key 'sources'"], id="empty-file"),
    pytest.param("sources: {}\n", None, ["{f}:1: sources: must list at least one"], id="no-sources"),
    pytest.param(
        "- sfdc\n- hubspot\n",
        None,
        ["{f}:1: the config must be a mapping with 'sources' and other settings"],
        id="a-list-not-a-mapping",
    ),
    pytest.param(
        "sources:\n  sfdc: salesforce\n",
        None,
        ["{f}:2: sources.sfdc: must be a mapping of keys to values"],
        id="source-that-is-text",
    ),
]


@pytest.mark.parametrize(("text", "environ", "expected"), CONFIG_CASES)
def test_config_messages(tmp_path: Path, text: str, environ: dict[str, str] | None, expected: list[str]) -> None:
    path = write_config(tmp_path, text)
    shown = messages(path, environ)
    assert shown == expand(expected, tmp_path, path)
    for secret in SECRETS:
        assert all(secret not in line for line in shown)


def test_mapping_problems_are_reported_through_the_config(tmp_path: Path) -> None:
    broken = MAPPING.replace("  Contacted: Working\n", "  Contacted: Workng\n")
    path = write_config(tmp_path, BASE, mapping=broken)
    lead = tmp_path / "lead.yaml"
    assert messages(path) == [
        f"{lead}:3: stage 'Working' has no status in 'statuses'; each stage needs exactly one",
        f"{lead}:8: status 'Contacted' names unknown stage 'Workng' (did you mean 'Working'?)",
    ]


def test_case_only_differences_are_a_warning_and_the_config_loads(tmp_path: Path) -> None:
    mapping = MAPPING.replace("  - {name: Lost, category: not_succeeded}\n",
                              "  - {name: Lost, category: not_succeeded}\n  - {name: LOST, category: not_succeeded}\n")
    mapping = mapping.replace("  Dead: Lost\n", "  Dead: Lost\n  Gone: LOST\n")
    path = write_config(tmp_path, BASE, mapping=mapping)
    config = load_config(path, ENV)
    assert [str(w) for w in config.warnings] == [
        f"{tmp_path / 'lead.yaml'}:6: warning: stages 'Lost' and 'LOST' differ only in case"
    ]
    assert config.object("sfdc", "Lead").mapping.stage_for_status("Gone") == "LOST"


def test_every_problem_at_once_in_line_order(tmp_path: Path) -> None:
    text = """\
database: sqlite:///connector.db
sources:
  sfdc:
    type: salesforce
    api_budjet: 50%
    auth:
      method: client_credentials
      client_id: ${SF_CLIENT_ID}
      client_secret: ${NOT_SET_ANYWHERE}
    objects:
      Lead: {status_field: Status, mapping: lead.yaml}
schedule: {sync_every: 10 days, timers_every: 0d}
writeback: {enabled: yes please}
"""
    mapping = MAPPING.replace("  Dead: Lost\n", "").replace("after: 14d", "after: 14")
    path = write_config(tmp_path, text, mapping=mapping)
    lead = tmp_path / "lead.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:5: sources.sfdc.api_budjet: unknown key 'api_budjet' (did you mean 'api_budget'?)",
        f"{path}:6: sources.sfdc.auth: auth method client_credentials needs the org's My Domain as login_url (or as "
        "the source's instance_url), e.g. https://acme.my.salesforce.com",
        f"{path}:9: sources.sfdc.auth.client_secret: environment variable NOT_SET_ANYWHERE is not set",
        f"{path}:12: schedule.sync_every: bad duration '10 days': {DURATION_HINT}",
        f"{path}:12: schedule.timers_every: bad duration '0d': must be more than zero",
        f"{path}:13: writeback.enabled: 'yes please' is not true or false",
        f"{lead}:5: stage 'Lost' has no status in 'statuses'; each stage needs exactly one",
        f"{lead}:12: triggers[1].after: bad duration 14: {DURATION_HINT}",
    ]


# --- the design's example and the repository's example -------------------------------------------
@pytest.fixture
def design_config(tmp_path: Path) -> Config:
    folder = tmp_path / "deploy"
    (folder / "mappings").mkdir(parents=True)
    (folder / "mappings" / "salesforce-lead.yaml").write_text(DESIGN_MAPPING, encoding="utf-8")
    for name in ("salesforce-contact.yaml", "hubspot-contact.yaml"):
        shutil.copy(REPO / "mappings" / name, folder / "mappings" / name)
    path = folder / "config.yaml"
    path.write_text(DESIGN_CONFIG, encoding="utf-8")
    return load_config(path, dict(ENV))


def test_design_example_loads(design_config: Config) -> None:
    folder = design_config.file.parent
    assert design_config.warnings == ()
    assert set(design_config.objects) == {("sfdc", "Lead"), ("sfdc", "Contact"), ("hubspot", "contacts")}
    assert design_config.database_url == f"sqlite:///{(folder / 'connector.db').resolve()}"

    sfdc = design_config.sources["sfdc"]
    assert isinstance(sfdc, SalesforceSource)
    assert sfdc.instance_url == "https://acme.my.salesforce.com"
    assert sfdc.api_version == "62.0"
    assert sfdc.ca_bundle is None
    assert sfdc.api_budget == 0.5
    assert isinstance(sfdc.auth, ClientCredentialsAuth)
    assert sfdc.auth.login_url == "https://acme.my.salesforce.com"
    assert sfdc.auth.client_id == ENV["SF_CLIENT_ID"]
    assert sfdc.auth.client_secret.get_secret_value() == ENV["SF_CLIENT_SECRET"]

    hubspot = design_config.sources["hubspot"]
    assert isinstance(hubspot, HubSpotSource)
    assert hubspot.base_url == "https://api.hubapi.com"
    assert isinstance(hubspot.auth, HubSpotTokenAuth)
    assert hubspot.auth.access_token.get_secret_value() == ENV["HUBSPOT_TOKEN"]

    lead = design_config.object("sfdc", "Lead")
    assert (lead.source, lead.name, lead.settings.status_field) == ("sfdc", "Lead", "Status")
    assert lead.settings.mapping == folder / "mappings" / "salesforce-lead.yaml"
    assert lead.mapping.stage_for_status("Closed - Converted") == "Meeting Set"
    assert design_config.object("sfdc", "Contact").settings.status_field == "Stage__c"
    contacts = design_config.object("hubspot", "contacts")
    assert contacts.settings.status_field == "hs_lead_status"
    assert contacts.mapping.stage_for_status("OPEN_DEAL") == "Open Deal"

    schedule = design_config.model.schedule
    assert (schedule.sync_every, schedule.writeback_every, schedule.timers_every, schedule.reconcile_every) == (
        timedelta(seconds=60), timedelta(seconds=10), timedelta(minutes=15), timedelta(hours=24),
    )
    writeback = design_config.model.writeback
    assert (writeback.enabled, writeback.conflict_check, writeback.max_attempts) == (True, True, 8)


def test_secrets_never_appear_in_repr_or_str(design_config: Config) -> None:
    texts = [
        repr(design_config), str(design_config), repr(design_config.model), str(design_config.model),
        design_config.model.model_dump_json(), repr(design_config.sources), repr(dict(design_config.objects)),
    ]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_repository_example_config_loads() -> None:
    config = load_config(REPO / "config.example.yaml", {})
    assert config.warnings == ()
    assert set(config.objects) == {
        ("sfdc", "Lead"), ("sfdc", "Contact"), ("sfdc", "Account"), ("hubspot", "contacts"), ("hubspot", "companies"),
    }
    # the ${NAME:-default} fallbacks apply when the environment has nothing
    sfdc = config.sources["sfdc"]
    assert isinstance(sfdc.auth, ClientCredentialsAuth)
    assert sfdc.auth.client_id == "example-client-id"
    for obj in config.objects.values():
        assert obj.settings.mapping.is_relative_to(REPO / "mappings")


def test_environment_is_read_when_none_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = load_config(write_config(tmp_path, BASE))
    hubspot = config.sources["hubspot"]
    assert isinstance(hubspot.auth, HubSpotTokenAuth)
    assert hubspot.auth.access_token.get_secret_value() == ENV["HUBSPOT_TOKEN"]


def test_env_default_and_partial_references(tmp_path: Path) -> None:
    text = _replace("instance_url: https://acme.my.salesforce.com", "instance_url: https://${SF_DOMAIN}.my.salesforce.com")
    text = _replace("client_id: ${SF_CLIENT_ID}", "client_id: ${SF_CLIENT_ID:-fallback-id}", text)
    text = _replace("client_secret: ${SF_CLIENT_SECRET}", "client_secret: '${SF_CLIENT_SECRET:-}'", text)
    path = write_config(tmp_path, text)
    config = load_config(path, {"SF_DOMAIN": "acme", "HUBSPOT_TOKEN": "t"})
    sfdc = config.sources["sfdc"]
    assert isinstance(sfdc, SalesforceSource) and isinstance(sfdc.auth, ClientCredentialsAuth)
    assert sfdc.instance_url == "https://acme.my.salesforce.com"
    assert sfdc.auth.client_id == "fallback-id"
    assert sfdc.auth.client_secret.get_secret_value() == ""
    config = load_config(path, {"SF_DOMAIN": "acme", "HUBSPOT_TOKEN": "t", "SF_CLIENT_ID": "from-env"})
    auth = config.sources["sfdc"].auth
    assert isinstance(auth, ClientCredentialsAuth) and auth.client_id == "from-env"


def test_an_env_value_is_data_not_yaml(tmp_path: Path) -> None:
    """A secret with YAML syntax in it is taken as it is, not parsed."""
    value = "a: b, {c}: [d] # e"
    config = load_config(write_config(tmp_path, BASE), {**ENV, "HUBSPOT_TOKEN": value})
    auth = config.sources["hubspot"].auth
    assert isinstance(auth, HubSpotTokenAuth) and auth.access_token.get_secret_value() == value


def test_secret_errors_inside_an_auth_block_do_not_echo_the_secret(tmp_path: Path) -> None:
    text = _replace("{method: token, access_token: ${HUBSPOT_TOKEN}}",
                    "{method: token, access_token: ${HUBSPOT_TOKEN}, token: ${SF_CLIENT_SECRET}}")
    shown = messages(write_config(tmp_path, text))
    assert shown == [f"{tmp_path / 'config.yaml'}:16: sources.hubspot.auth.token: unknown key 'token'"]


# --- what the loaded config gives the rest of the connector --------------------------------------
def test_loaded_config_is_immutable(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, BASE), ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.file = tmp_path  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        config.model.database = "sqlite:///other.db"  # type: ignore[misc]
    source = config.sources["sfdc"]
    with pytest.raises(pydantic.ValidationError):
        source.api_budget = 1.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        source.auth.method = "token"  # type: ignore[misc,union-attr]
    with pytest.raises(pydantic.ValidationError):
        config.model.schedule.sync_every = timedelta(seconds=1)  # type: ignore[misc]
    lead = config.object("sfdc", "Lead")
    with pytest.raises(dataclasses.FrozenInstanceError):
        lead.mapping = lead.mapping  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        lead.settings.status_field = "Other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.objects[("sfdc", "Other")] = lead  # type: ignore[index]
    # `sources` hands out a copy: changing it does not change the config
    config.sources.pop("sfdc")
    assert "sfdc" in config.sources


def test_paths_are_relative_to_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "connector"
    (folder / "maps").mkdir(parents=True)
    (folder / "maps" / "lead.yaml").write_text(MAPPING, encoding="utf-8")
    text = _replace("database: sqlite:///connector.db", "database: sqlite:///data/state.db")
    text = _replace("mapping: lead.yaml}", "mapping: maps/lead.yaml}", text)
    text = _replace("mapping: lead.yaml}", "mapping: maps/lead.yaml}", text)
    text = _replace("    api_budget: 50%\n", "    api_budget: 50%\n    ca_bundle: certs/proxy.pem\n", text)
    path = write_config(folder, text, mapping=None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(path, ENV)
    assert config.database_url == f"sqlite:///{(folder / 'data' / 'state.db').resolve()}"
    sfdc = config.sources["sfdc"]
    assert sfdc.ca_bundle == folder / "certs" / "proxy.pem"
    assert config.object("sfdc", "Lead").settings.mapping == folder / "maps" / "lead.yaml"
    assert config.object("hubspot", "contacts").settings.mapping == folder / "maps" / "lead.yaml"

    # a relative --config path works from its own folder's parent too
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/connector/config.yaml"), ENV)
    assert config.object("sfdc", "Lead").mapping.stage_for_status("Open") == "New"
    assert config.database_url == f"sqlite:///{(folder / 'data' / 'state.db').resolve()}"


def test_jwt_private_key_file_is_relative_to_the_config(tmp_path: Path) -> None:
    text = _replace(
        "      method: client_credentials\n      client_id: ${SF_CLIENT_ID}\n"
        "      client_secret: ${SF_CLIENT_SECRET}\n",
        "      method: jwt\n      client_id: ${SF_CLIENT_ID}\n      username: ops@acme.com\n"
        "      private_key_file: keys/server.key\n",
    )
    config = load_config(write_config(tmp_path, text), ENV)
    auth = config.sources["sfdc"].auth
    assert isinstance(auth, JwtAuth)
    assert auth.private_key_file == tmp_path / "keys" / "server.key"
    assert auth.username == "ops@acme.com"


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        pytest.param("'sqlite:///:memory:'", "sqlite:///:memory:", id="memory"),
        pytest.param("sqlite:////var/lib/connector.db", "sqlite:////var/lib/connector.db", id="absolute"),
        pytest.param("postgresql+psycopg://sync@db.internal/crm", "postgresql+psycopg://sync@db.internal/crm",
                     id="postgresql"),
    ],
)
def test_databases_that_are_not_relative_files_are_kept(tmp_path: Path, database: str, expected: str) -> None:
    text = _replace("database: sqlite:///connector.db", f"database: {database}")
    assert load_config(write_config(tmp_path, text), ENV).database_url == expected


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    other = tmp_path / "shared"
    other.mkdir()
    (other / "lead.yaml").write_text(MAPPING, encoding="utf-8")
    text = BASE.replace("mapping: lead.yaml}", f"mapping: {other / 'lead.yaml'}}}")
    text = _replace("    api_budget: 50%\n", "    api_budget: 50%\n    ca_bundle: /etc/ssl/proxy.pem\n", text)
    config = load_config(write_config(tmp_path / "conf", text, mapping=None), ENV)
    assert config.object("sfdc", "Lead").settings.mapping == other / "lead.yaml"
    assert config.sources["sfdc"].ca_bundle == Path("/etc/ssl/proxy.pem")


@pytest.mark.parametrize(("written", "expected"), [("62.0", "62.0"), ('"62.0"', "62.0"), ("'59.0'", "59.0")])
def test_api_version_unquoted_is_text(tmp_path: Path, written: str, expected: str) -> None:
    text = _replace('api_version: "62.0"', f"api_version: {written}")
    source = load_config(write_config(tmp_path, text), ENV).sources["sfdc"]
    assert isinstance(source, SalesforceSource)
    assert source.api_version == expected


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("14d", timedelta(days=14)),
        ("1w", timedelta(weeks=1)),
        ("' 5 m '", timedelta(minutes=5)),
    ],
)
def test_durations_parse_to_timedeltas(tmp_path: Path, written: str, expected: timedelta) -> None:
    text = _replace("{sync_every: 60s,", f"{{sync_every: {written},")
    text = _replace("    api_budget: 50%\n", f"    api_budget: 50%\n    lookback: {written}\n", text)
    config = load_config(write_config(tmp_path, text), ENV)
    assert config.model.schedule.sync_every == expected
    assert config.sources["sfdc"].lookback == expected


def test_defaults_when_left_out(tmp_path: Path) -> None:
    text = BASE.split("schedule:")[0].replace("    api_budget: 50%\n", "")
    config = load_config(write_config(tmp_path, text), ENV)
    schedule = config.model.schedule
    assert (schedule.sync_every, schedule.writeback_every, schedule.timers_every, schedule.reconcile_every) == (
        timedelta(seconds=60), timedelta(seconds=10), timedelta(minutes=15), timedelta(hours=24),
    )
    assert config.model.writeback.enabled is True
    assert config.model.writeback.conflict_check is True
    assert config.model.writeback.max_attempts == 8
    sfdc = config.sources["sfdc"]
    assert sfdc.api_budget == 0.5
    assert sfdc.lookback == timedelta(seconds=5)
    assert sfdc.timeout == timedelta(seconds=60)
    assert config.object("sfdc", "Lead").settings.clear_before_backwards is True
    hubspot = config.sources["hubspot"]
    assert isinstance(hubspot, HubSpotSource) and hubspot.base_url == "https://api.hubapi.com"


@pytest.mark.parametrize(("written", "expected"), [("50%", 0.5), ("12.5%", 0.125), ("100%", 1.0), ("' 1 % '", 0.01)])
def test_percentages_parse_to_fractions(tmp_path: Path, written: str, expected: float) -> None:
    text = _replace("api_budget: 50%", f"api_budget: {written}")
    assert load_config(write_config(tmp_path, text), ENV).sources["sfdc"].api_budget == pytest.approx(expected)


def test_one_mapping_file_shared_by_two_objects_is_read_once(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, BASE), ENV)
    assert config.object("sfdc", "Lead").mapping is config.object("hubspot", "contacts").mapping


# --- bugs ------------------------------------------------------------------------------------------
def test_missing_mapping_is_reported_with_other_config_errors(tmp_path: Path) -> None:
    text = _replace("mapping: lead.yaml}", "mapping: missing.yaml}")
    text = _replace("api_budget: 50%", "api_budget: 150%", text)
    shown = messages(write_config(tmp_path, text))
    assert f"{tmp_path / 'missing.yaml'}: file not found" in shown


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "valid_here"),
    [
        pytest.param("writeback:", "objects: {}\nwriteback:", 20, "objects", {"sources", "schedule", "writeback"},
                     id="objects-at-top-level-suggests-objects"),
        pytest.param("writeback:", "stauses: {}\nwriteback:", 20, "stauses", {"sources", "schedule", "writeback"},
                     id="stauses-at-top-level-suggests-status_field"),
        pytest.param(
            "{method: token, access_token: ${HUBSPOT_TOKEN}}",
            "{method: token, access_token: ${HUBSPOT_TOKEN}, client_id: x}",
            16, "client_id", {"method", "access_token"},
            id="client_id-in-hubspot-auth-suggests-client_id",
        ),
        pytest.param("max_attempts: 8}", "max_attempts: 8, retries: 3}", 20, "retries",
                     {"enabled", "conflict_check", "max_attempts"}, id="retries-in-writeback-suggests-max_retries"),
    ],
)
def test_suggestions_only_name_keys_valid_at_that_place(
    tmp_path: Path, old: str, new: str, line: int, key: str, valid_here: set[str]
) -> None:
    path = write_config(tmp_path, _replace(old, new))
    shown = messages(path)
    assert len(shown) == 1
    assert shown[0].startswith(f"{path}:{line}: ")
    assert f"unknown key '{key}'" in shown[0]
    if "did you mean" in shown[0]:
        suggested = shown[0].split("did you mean '")[1].split("'")[0]
        assert suggested in valid_here


def test_config_error_text_is_in_line_order(tmp_path: Path) -> None:
    text = _replace("api_budget: 50%", "api_budget: 150%")  # line 11, a validation error
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"SF_CLIENT_ID": "id", "SF_CLIENT_SECRET": "s"})  # line 16: HUBSPOT_TOKEN is missing
    assert [p.line for p in caught.value.problems] == [11, 16]
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("text", ["---\n", "null\n", "~\n"], ids=["dashes", "null", "tilde"])
def test_null_document_is_reported(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert caught.value.problems
    assert all(str(p).startswith(f"{path}:1: ") for p in caught.value.problems)


def test_database_password_from_env_is_not_in_repr(tmp_path: Path) -> None:
    text = _replace("database: sqlite:///connector.db", "database: postgresql+psycopg://sync:${DB_PASSWORD}@db/crm")
    config = load_config(write_config(tmp_path, text), {**ENV, "DB_PASSWORD": "db-pw-91c2e"})
    assert "db-pw-91c2e" not in repr(config)
    assert "db-pw-91c2e" not in repr(config.model)


def test_default_database_is_relative_to_the_config(tmp_path: Path) -> None:
    text = _replace("database: sqlite:///connector.db\n", "")
    config = load_config(write_config(tmp_path, text), ENV)
    assert config.database_url == f"sqlite:///{(tmp_path / 'connector.db').resolve()}"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param("mapping: lead.yaml}", 'mapping: "lead\\0.yaml"}', id="mapping"),
        pytest.param("database: sqlite:///connector.db", 'database: "sqlite:///con\\0nector.db"', id="database"),
    ],
)
def test_nul_in_a_path_is_a_problem_not_a_crash(tmp_path: Path, old: str, new: str) -> None:
    path = write_config(tmp_path, _replace(old, new))
    with pytest.raises(ConfigError):
        load_config(path, ENV)


# --- any YAML at all: a config or a clean ConfigError, never a crash -----------------------------
_yaml = YAML(typ="safe", pure=True)


def _dump(data: object) -> str:
    out = io.StringIO()
    _yaml.dump(data, out)
    return out.getvalue()


# NUL is left out of generated paths: it has a test of its own above.
paths = st.one_of(
    st.sampled_from(["lead.yaml", "missing.yaml", "fuzz-mapping.yaml", ".", "/", "sub/../lead.yaml"]),
    st.text(st.characters(blacklist_characters="\x00"), max_size=12),
)
junk = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.sampled_from(KEYS), scalars, max_size=2))
path_values = st.one_of(paths, junk)
objects = st.dictionaries(
    st.sampled_from(["Lead", "contacts", "x"]),
    st.one_of(
        st.fixed_dictionaries({"status_field": st.sampled_from(["Status", 1]), "mapping": path_values},
                              optional={"fields": junk, "owner_field": junk}),
        junk,
    ),
    max_size=2,
)
sources = st.dictionaries(
    st.sampled_from(["sfdc", "hubspot", "S"]),
    st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["salesforce", "hubspot", "pipedrive"]),
                "auth": st.one_of(
                    st.fixed_dictionaries({"method": st.sampled_from(["token", "jwt", "password", "x"]),
                                           "access_token": st.sampled_from(["${HUBSPOT_TOKEN}", "${NOPE}", "t"])}),
                    junk,
                ),
                "objects": objects,
            },
            optional={"api_budget": st.sampled_from(["50%", "150%", 50, "${B:-5%}"]),
                      "ca_bundle": path_values, "api_version": st.sampled_from([62.0, "62.0", 62]),
                      "lookback": st.sampled_from(["5s", "0s", "five"])},
        ),
        junk,
    ),
    max_size=2,
)
config_docs = st.fixed_dictionaries(
    {"sources": sources},
    optional={
        "database": st.one_of(st.sampled_from(["sqlite:///x.db", "sqlite:///:memory:", "sqlite:///"]),
                              paths.map(lambda p: "sqlite:///" + p)),
        "schedule": st.dictionaries(st.sampled_from(["sync_every", "timers_every", "bogus"]),
                                    st.sampled_from(["60s", "0d", "14", "1w"]), max_size=3),
        **{key: junk for key in ("writeback", "server", "notifications")},
    },
)
@st.composite
def near_valid_configs(draw: st.DrawFn) -> dict[str, object]:
    """A valid config, then (mostly) one key somewhere set to something arbitrary."""
    hubspot: dict[str, object] = {
        "type": "hubspot",
        "auth": {"method": "token", "access_token": draw(st.sampled_from(["${HUBSPOT_TOKEN}", "${NOPE:-x}"]))},
        "objects": {"contacts": {"status_field": "hs_lead_status", "mapping": draw(paths)}},
    }
    sfdc: dict[str, object] = {
        "type": "salesforce",
        "api_version": draw(st.sampled_from([62.0, "62.0"])),
        "auth": {"method": "client_credentials", "client_id": "${SF_CLIENT_ID}",
                 "client_secret": "${SF_CLIENT_SECRET}"},
        "objects": {"Lead": {"status_field": "Status", "mapping": "lead.yaml"}},
    }
    doc: dict[str, object] = {"sources": {"hubspot": hubspot, "sfdc": sfdc}}
    where = draw(st.sampled_from(["none", "top", "source", "auth", "object", "schedule"]))
    key, value = draw(st.sampled_from([*KEYS, "lookback", "timeout", "sync_every", "enabled"])), draw(junk)
    if where == "top":
        doc[key] = value
    elif where == "source":
        sfdc[key] = value
    elif where == "auth":
        hubspot["auth"][key] = value  # type: ignore[index]
    elif where == "object":
        sfdc["objects"]["Lead"][key] = value  # type: ignore[index]
    elif where == "schedule":
        doc["schedule"] = {key: value}
    return doc


config_texts = st.one_of(
    near_valid_configs().map(_dump),
    config_docs.map(_dump),
    st.dictionaries(st.sampled_from(KEYS + WORDS), documents, max_size=4).map(_dump),
    st.text(max_size=200),
    st.binary(max_size=200),
)


def _is_null_document(text: str | bytes) -> bool:
    try:
        node = YAML(typ="rt").compose(text)
    except Exception:
        return False
    return node is not None and str(getattr(node.tag, "value", node.tag)) == "tag:yaml.org,2002:null"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tiny = "stages: [{name: A, category: in_progress}]\nstatuses: {a: A}\n"
        (root / "lead.yaml").write_text(tiny, encoding="utf-8")
        (root / "fuzz-mapping.yaml").write_text("stages: [\n", encoding="utf-8")
        yield root


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=config_texts)
def test_any_yaml_gives_a_config_or_a_config_error(scratch: Path, text: str | bytes) -> None:
    path = scratch / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    try:
        config = load_config(path, dict(ENV))
    except ConfigError as exc:
        if not exc.problems:  # the known bug of test_null_document_is_reported: nothing else may do this
            assert _is_null_document(text)
            return
        assert all(isinstance(p, Problem) for p in exc.problems)
        assert any(not p.warning for p in exc.problems)
        text_out = "\n".join(str(p) for p in exc.problems)
        for secret in SECRETS:
            assert secret not in text_out
    else:
        assert config.objects
        for secret in SECRETS:
            assert secret not in repr(config)
        json.dumps(config.model.model_dump(mode="json"))


# --- criteria triggers: the fields they read -----------------------------------------------------
CRITERIA_MAPPING = MAPPING.replace(
    "overrides:\n",
    "  - {name: hot, on: {field: Score__c, gte: 50}, from: [New], to: Working}\n"
    "  - {name: src, on: {field: LeadSource, equals: Web}, from: [New], to: Working}\n"
    "overrides:\n",
)


def test_criteria_fields_are_read_with_every_record(tmp_path: Path) -> None:
    text = BASE.replace("Lead: {status_field: Status, mapping: lead.yaml}",
                        "Lead: {status_field: Status, mapping: lead.yaml, fields: [Country, LeadSource]}")
    config = load_config(write_config(tmp_path, text, mapping=CRITERIA_MAPPING), dict(ENV))
    lead, contacts = config.object("sfdc", "Lead"), config.object("hubspot", "contacts")
    assert lead.read_fields == ("OwnerId", "Country", "LeadSource", "Score__c")
    assert contacts.read_fields == ("hubspot_owner_id", "Score__c", "LeadSource")
    # The sources build their reads from the config's object settings: these carry the fields too.
    sfdc = config.sources["sfdc"]
    assert sfdc.objects["Lead"].fields == ("Country", "LeadSource", "Score__c")


def test_a_criteria_trigger_on_the_status_field_is_refused(tmp_path: Path) -> None:
    mapping = CRITERIA_MAPPING.replace("field: LeadSource, equals: Web", "field: status, equals: Open")
    path = write_config(tmp_path, BASE, mapping=mapping)
    assert messages(path) == [
        f"{path}:13: sources.sfdc.objects.Lead.mapping: criteria trigger 'src' reads the status field Status; "
        "a status read is rule 1's (map it in 'statuses')"
    ]
