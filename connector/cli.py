"""The command layer: parse, call, print. Errors a user can fix become a message and an exit code."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from connector.config import Config, default_config_path, load_config
from connector.errors import ConfigError, ConnectorError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command receives: where the config is, and the instant rules are evaluated at."""

    def __init__(self, config_path: Path, now: datetime | None) -> None:
        self.config_path = config_path
        self._now = now
        self._config: Config | None = None

    @property
    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    @property
    def now_given(self) -> bool:
        return self._now is not None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
            for warning in self._config.warnings:
                click.echo(str(warning), err=True)
        return self._config


def _parse_now(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 instant such as 2026-05-01T09:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def common(func: F) -> F:
    """--config and --now on every command, and one place that turns our errors into exit codes."""

    @click.option(
        "--config", "config_path", type=click.Path(path_type=Path), default=None,
        help="config file (default ./config.yaml, or $CONNECTOR_CONFIG)",
    )
    @click.option(
        "--now", callback=_parse_now, default=None, help="evaluate time-based rules as of this ISO 8601 instant"
    )
    @functools.wraps(func)
    def wrapper(config_path: Path | None, now: datetime | None, **kwargs: Any) -> Any:
        context = Context(config_path or default_config_path(), now)
        try:
            return func(context, **kwargs)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            sys.exit(exc.exit_code)
        except ConnectorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="connector")
def main() -> None:
    """Keep CRM statuses in step with a local, ordered model of stages."""


@main.command()
@common
def validate(ctx: Context) -> None:
    """Check the config and every mapping file; every problem is listed with file:line."""
    config = ctx.config
    mappings = {o.mapping.file for o in config.objects.values()}
    click.echo(f"{ctx.config_path}: ok ({len(config.objects)} objects, {len(mappings)} mapping files)")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("schema"), show_default=True,
              help="folder to write config.schema.json and mapping.schema.json to")
def schema(out: Path) -> None:
    """Write JSON Schema for config and mapping files, for editors (yaml-language-server)."""
    from connector.schemas import write_schemas

    for path in write_schemas(out):
        click.echo(f"wrote {path}")


def fail_usage(message: str) -> None:
    raise UsageError(message)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()
