"""The browser for the health page tests: Debian's Chromium driven by playwright, never a downloaded one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CONNECTOR_CHROMIUM", "/usr/bin/chromium"))


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the health page's browser test needs {reason} in CI (.ci/run installs it)")
    pytest.skip(f"{reason} (apt-get install -y chromium chromium-driver; pip install playwright)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package")
    if not CHROMIUM.exists():
        _missing(f"Chromium at {CHROMIUM}")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()
