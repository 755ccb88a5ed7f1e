"""Shared test helpers: a config.yaml with an offline source (no CRM is called) and its mapping."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def offline_config(
    folder: Path,
    mapping: str,
    *,
    database: str = "sqlite:///unused.db",
    source: str = "crm",
    objects: Sequence[str] = ("Lead",),
    object_settings: str = "",
    mapping_file: str = "mapping.yaml",
    extra: str = "",
) -> Path:
    """Write `mapping` and a config whose objects all use it; return the config's path.

    `object_settings` is added to each object's flow mapping (e.g. ", fields: [Region]"); `extra` is
    appended at the top level (e.g. a `notifications:` block).
    """
    (folder / mapping_file).write_text(mapping, encoding="utf-8")
    lines = [
        f'database: "{database}"',
        "sources:",
        f"  {source}:",
        "    type: salesforce",
        "    instance_url: https://acme.my.salesforce.com",
        "    auth: {method: token, access_token: not-a-secret}",
        "    objects:",
        *(f"      {obj}: {{status_field: Status, mapping: {mapping_file}{object_settings}}}" for obj in objects),
    ]
    path = folder / "config.yaml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


# Two stages and one trigger: enough for tests of the machinery around the rules (dry runs, health).
SMALL_MAPPING = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress}
statuses: {Open: New, Contacted: Working}
triggers:
  - {name: replied, on: email_replied, from: [New], to: Working}
"""
