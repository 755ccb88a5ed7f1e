"""`connector validate [--live] [--json]`: every problem in the config, its mappings and the files they name.

Text prints one line per problem (file:line: key: message); `--json` prints one object,
`{"ok", "config", "objects", "problems": [{"file","line","key","message","severity"}]}`, errors too.
Exit 0 when nothing is wrong (warnings allowed), 2 otherwise.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from connector.config import Config, load_config
from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.cli import Context


def run_validate(ctx: Context, live: bool, as_json: bool) -> int:
    problems: list[dict[str, Any]] = []
    config: Config | None = None
    try:
        config = load_config(ctx.config_path)
    except ConfigError as exc:
        problems = [p.to_json() for p in exc.problems]
        if not as_json:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
    if config is not None:
        found = [*config.warnings, *(p for source in config.missing_files.values() for p in source)]
        problems = [p.to_json() for p in found]
        if not as_json:
            for problem in found:
                click.echo(str(problem), err=True)
        if live and not config.missing_files:
            problems.extend(_live(config, as_json))
    failed = any(p["severity"] == "error" for p in problems)
    if as_json:
        objects = len(config.objects) if config else None
        data = {"ok": not failed, "config": str(ctx.config_path), "objects": objects, "problems": problems}
        click.echo(json.dumps(data, indent=2))
    elif config is not None and not failed:
        mappings = {o.mapping.file for o in config.objects.values()}
        files = "mapping file" if len(mappings) == 1 else "mapping files"
        click.echo(f"{ctx.config_path}: ok ({len(config.objects)} objects, {len(mappings)} {files})")
    return 2 if failed else 0


def _live(config: Config, as_json: bool) -> list[dict[str, Any]]:
    from connector.live import LiveFinding, validate_live
    from connector.sources.factory import open_sources

    findings: list[LiveFinding] = []
    sources = open_sources(config)
    try:
        validate_live(sources, list(config.objects.values()), (lambda _line: None) if as_json else click.echo, findings)
    finally:
        for source in sources.values():
            source.close()
    return [f.to_json() for f in findings]
