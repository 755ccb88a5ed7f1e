"""Shared by the CLI end-to-end tests: both sandbox CRMs and a config.yaml pointing at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.demo import _write_config
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox
from tests.salesforce_support import World

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



# Salesforce worlds (sandbox + config + engine), for the Salesforce end-to-end files.
OpenWorld = Callable[..., World]


@pytest.fixture
def open_world(tmp_path: Path) -> Iterator[OpenWorld]:
    """Opens worlds (sandbox + config + engine) on demand; all are closed when the test ends."""
    opened: list[World] = []

    def make(db_url: str | None = None, **config: Any) -> World:
        folder = tmp_path / f"world{len(opened)}"
        folder.mkdir()
        world = World.open(folder, db_url, **config)
        opened.append(world)
        return world

    yield make
    for world in opened:
        world.close()


@pytest.fixture
def world(open_world: OpenWorld) -> World:
    return open_world()
