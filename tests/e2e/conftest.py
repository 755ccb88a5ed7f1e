"""Shared by the CLI end-to-end tests: both sandbox CRMs and a config.yaml pointing at them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.demo import _write_config
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox

Crms = tuple[SalesforceSandbox, HubSpotSandbox, Path]


@pytest.fixture
def crms(tmp_path: Path) -> Iterator[Crms]:
    sf, hs = SalesforceSandbox(), HubSpotSandbox()
    sf.start()
    hs.start()
    try:
        yield sf, hs, _write_config(tmp_path, sf, hs)
    finally:
        sf.stop()
        hs.stop()


def run_cli(config: Path, *args: str) -> tuple[int, str]:
    """A command through the CLI runner: exit code and output; a traceback is always a failure."""
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert "Traceback" not in result.output
    return result.exit_code, result.output
