"""Every command that talks to a CRM, against a CRM that refuses us, is not there, or cannot be trusted.

A wrong credential, a closed loopback port and a missing `ca_bundle` must each end in an exit code
(1 or 2), one line naming the source and the cause, and never a traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.demo import _write_config
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox

COMMANDS = [
    ("sync", "--once"),
    ("sync", "sfdc", "Lead", "--once"),
    ("resync", "sfdc", "Lead"),
    ("resync", "hubspot", "contacts", "--ids", "101"),
    ("validate", "--live"),
    ("mapping", "init", "sfdc", "Lead", "--field", "Status"),
    ("mapping", "init", "hubspot", "contacts", "--field", "hs_lead_status"),
]
# What the one line must say, per fault: the source's name and words for the cause.
CAUSES = {
    "wrong-credential": ("invalid_client", "INVALID_AUTHENTICATION"),
    "closed-port": ("Connection refused",),
    "missing-ca-bundle": ("ca_bundle: file not found",),
}


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One pair of sandboxes for the module: the config text that works, and its folder."""
    folder = tmp_path_factory.mktemp("crms")
    sf, hs = SalesforceSandbox(), HubSpotSandbox()
    sf.start()
    hs.start()
    try:
        text = _write_config(folder, sf, hs).read_text()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
        probe.close()  # nothing listens there any more: connections are refused at once
        # The facts `_broken` needs ride along in a trailing comment of the config text.
        yield folder, text + f"# closed={closed} sf={sf.url} hs={hs.url} secret={sf.client_secret} token={hs.token}\n"
    finally:
        sf.stop()
        hs.stop()


def _broken(text: str, fault: str) -> str:
    facts = dict(item.split("=", 1) for item in text.rsplit("# ", 1)[1].split())
    if fault == "wrong-credential":
        return text.replace(facts["secret"], "wrong-secret").replace(facts["token"], "wrong-token")
    if fault == "closed-port":
        port = facts["closed"]
        text = text.replace(facts["sf"], f"https://127.0.0.1:{port}").replace(facts["hs"], f"http://127.0.0.1:{port}")
        # Network errors are retried with backoff (about 20 s a source by default); the test needs the last answer.
        return text.replace("    type: salesforce\n", "    type: salesforce\n    max_retries: 0\n").replace(
            "    type: hubspot\n", "    type: hubspot\n    max_retries: 0\n"
        )
    return text.replace("    ca_bundle: ", "    ca_bundle: missing-").replace(
        "  hubspot:\n    type: hubspot\n", "  hubspot:\n    type: hubspot\n    ca_bundle: missing-ca.pem\n"
    )


@pytest.mark.parametrize("fault", list(CAUSES))
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_crm_failure_is_one_line_and_an_exit_code(
    sandboxes: tuple[Path, str], tmp_path: Path, fault: str, command: tuple[str, ...]
) -> None:
    folder, text = sandboxes
    config = tmp_path / "config.yaml"
    config.write_text(_broken(text, fault).replace("mappings/", f"{folder}/mappings/"))
    result = CliRunner().invoke(main, [*command, "--config", str(config)])
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    assert result.exit_code in (1, 2), output
    sources = [s for s in ("sfdc", "hubspot") if s in command] or ["sfdc", "hubspot"]
    for source in sources:
        named = [line for line in output.splitlines() if source in line]
        assert any(any(cause in line for cause in CAUSES[fault]) for line in named), output
    assert "wrong-secret" not in output and "wrong-token" not in output


def test_status_after_a_failed_sync_names_the_source_and_the_crms_words(
    sandboxes: tuple[Path, str], tmp_path: Path
) -> None:
    """`status` reads only the store: it works (exit 0) and shows the failure in the CRM's words."""
    folder, text = sandboxes
    config = tmp_path / "config.yaml"
    config.write_text(_broken(text, "wrong-credential").replace("mappings/", f"{folder}/mappings/"))
    assert CliRunner().invoke(main, ["sync", "--once", "--config", str(config)]).exit_code == 1
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "invalid_client" in result.output and "INVALID_AUTHENTICATION" in result.output


def test_validate_names_every_missing_file_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "lead.yaml").write_text(
        (Path(__file__).resolve().parents[2] / "mappings/salesforce-lead.yaml").read_text()
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n"
        "  sfdc:\n"
        "    type: salesforce\n"
        "    instance_url: https://acme.my.salesforce.com\n"
        "    auth:\n"
        "      method: jwt\n"
        "      client_id: abc\n"
        "      username: me@acme.test\n"
        "      private_key_file: keys/missing.key\n"
        "    ca_bundle: certs/missing.pem\n"
        "    objects:\n"
        "      Lead: {status_field: Status, mapping: lead.yaml}\n"
        "      Contact: {status_field: Status, mapping: contact-missing.yaml}\n"
    )
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.splitlines() == [
        f"{config}:9: sources.sfdc.auth.private_key_file: file not found: {tmp_path}/keys/missing.key",
        f"{config}:10: sources.sfdc.ca_bundle: file not found: {tmp_path}/certs/missing.pem",
        f"{config}:13: sources.sfdc.objects.Contact.mapping: mapping file not found: {tmp_path}/contact-missing.yaml",
    ]
    (tmp_path / "contact-missing.yaml").write_text((tmp_path / "lead.yaml").read_text())
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{config}:10: sources.sfdc.ca_bundle: file not found: {tmp_path}/certs/missing.pem",
        f"{config}:9: sources.sfdc.auth.private_key_file: file not found: {tmp_path}/keys/missing.key",
    ]
