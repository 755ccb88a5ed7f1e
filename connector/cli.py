"""The command layer: parse, call, print. Errors a user can fix become a message and an exit code."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from connector.errors import ConfigError, ConnectorError, UsageError

if TYPE_CHECKING:
    from connector.config import Config
    from connector.engine import Engine

# Commands import what they need inside their bodies: `connector --help`, `status` and `explain` must
# start at once, without the CRM clients, alembic or matplotlib (tests/test_lazy_imports.py guards it).

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command receives: where the config is, and the instant rules are evaluated at."""

    def __init__(self, config_path: Path, now: datetime | None) -> None:
        self.config_path = config_path
        self._now = now
        self._config: Config | None = None
        self._engine: Engine | None = None

    @property
    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    @property
    def now_given(self) -> bool:
        return self._now is not None

    def engine(self, *, with_sources: bool = False) -> Engine:
        if self._engine is None:
            from connector.engine import Engine
            from connector.store.db import open_store

            store = open_store(self.config.database_url)
            self._engine = Engine(self.config, store, {})
        if with_sources and not self._engine.sources:
            from connector.heap import freeze_startup_objects
            from connector.sources.factory import open_sources

            self._engine.sources.update(open_sources(self.config))
            # Set up to talk to the CRM: what exists now lives as long as the process (see `heap`).
            freeze_startup_objects()
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            for source in self._engine.sources.values():
                source.close()
            self._engine.store.close()

    @property
    def config(self) -> Config:
        if self._config is None:
            from connector.config import load_config

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


def outside_failure(exc: BaseException, source: str | None) -> tuple[str, int] | None:
    """The one line and exit code for a failure outside the user's control, or None for a bug.

    A CRM's refusal or an unreachable CRM (already classified as a CrmError by the sources, with the
    CRM's words) and a file the system will not let us read end a command the same way everywhere:
    the source, the cause, exit 2 when the admin must change something, else 1.
    """
    from connector.sources.errors import Action, CrmError

    where = f"{source}: " if source else ""
    if isinstance(exc, CrmError):
        admin = exc.action is Action.ADMIN
        hint = " (check the source's credentials, permissions and field names)" if admin else ""
        return f"error: {where}{exc.describe()}{hint}", 2 if admin else 1
    if isinstance(exc, OSError):
        name = f": {exc.filename}" if exc.filename else ""
        return f"error: {where}{exc.strerror or exc}{name}", 2 if exc.filename else 1
    return None


def common(func: F) -> F:
    """--config and --now on every command, and one place that turns our errors into exit codes."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="config file (default ./config.yaml, or $CONNECTOR_CONFIG)",
    )
    @click.option(
        "--now", callback=_parse_now, default=None, help="evaluate time-based rules as of this ISO 8601 instant"
    )
    @functools.wraps(func)
    def wrapper(config_path: Path | None, now: datetime | None, **kwargs: Any) -> Any:
        from connector.config import default_config_path

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
        except Exception as exc:
            failure = outside_failure(exc, kwargs.get("source"))
            if failure is None:
                raise  # a bug: the traceback is what a bug report needs
            click.echo(failure[0], err=True)
            sys.exit(failure[1])
        finally:
            context.close()

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="connector")
def main() -> None:
    """Keep CRM statuses in step with a local, ordered model of stages."""


@main.command()
@click.option("--live", is_flag=True, help="also check in the CRM that each field exists and every value is mapped")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object: ok, and every problem found")
@common
def validate(ctx: Context, live: bool, as_json: bool) -> None:
    """Check the config and every mapping file; every problem is listed with file:line."""
    from connector.cli_validate import run_validate

    sys.exit(run_validate(ctx, live, as_json))


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("schema"),
    show_default=True,
    help="folder to write config.schema.json and mapping.schema.json to",
)
def schema(out: Path) -> None:
    """Write JSON Schema for config and mapping files, for editors (yaml-language-server)."""
    from connector.schemas import write_schemas

    for path in write_schemas(out):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("source")
@click.argument("object_name", metavar="OBJECT")
@click.argument("record_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@common
def explain(ctx: Context, source: str, object_name: str, record_id: str, as_json: bool) -> None:
    """Why a record is (or is not) in its stage: lock, history, causes and suppressed triggers."""
    from connector import explain as explaining

    engine = ctx.engine()
    data = explaining.explain(engine, engine.synced(source, object_name), record_id)
    click.echo(json.dumps(data, indent=2) if as_json else explaining.render_text(data))


@main.group()
def stage() -> None:
    """Set a stage by hand, or unlock a record so triggers apply again."""


@stage.command("set")
@click.argument("source")
@click.argument("object_name", metavar="OBJECT")
@click.argument("record_id", metavar="ID")
@click.argument("stage_name", metavar="STAGE")
@click.option("--note", default="", help="why, for the history")
@common
def stage_set(ctx: Context, source: str, object_name: str, record_id: str, stage_name: str, note: str) -> None:
    """Set a record's stage by hand; the stage's status is queued for write-back."""
    engine = ctx.engine()
    synced = engine.synced(source, object_name)
    decision = engine.set_stage(synced, record_id, stage_name, ctx.now, note=note)
    queued = f"; write-back of {decision.writeback!r} queued" if decision.writeback else "; the CRM already has it"
    click.echo(f"{source} {object_name} {record_id}: {decision.state.stage} (set by manual){queued}")


@stage.command("unlock")
@click.argument("source")
@click.argument("object_name", metavar="OBJECT")
@click.argument("record_id", metavar="ID")
@common
def stage_unlock(ctx: Context, source: str, object_name: str, record_id: str) -> None:
    """Let triggers move a record again (set_by becomes trigger)."""
    engine = ctx.engine()
    decision = engine.unlock(engine.synced(source, object_name), record_id, ctx.now)
    click.echo(f"{source} {object_name} {record_id}: unlocked in {decision.state.stage}; triggers apply again")


@main.command()
@click.argument("source")
@click.argument("object_name", metavar="OBJECT")
@click.argument("record_id", metavar="ID")
@click.argument("event_type", metavar="TYPE")
@click.option("--at", "at_text", default=None, help="when it happened (ISO 8601); default --now")
@common
def event(ctx: Context, source: str, object_name: str, record_id: str, event_type: str, at_text: str | None) -> None:
    """Feed an activity event (email_replied, meeting_booked, custom:NAME ...) to a record."""
    from connector.mapping import ACTIVITY_EVENTS, is_activity_event
    from connector.yamlfile import suggest

    if not is_activity_event(event_type):
        hint = suggest(event_type, ACTIVITY_EVENTS)
        raise UsageError(f"unknown event '{event_type}'{hint}; events: {', '.join(ACTIVITY_EVENTS)}, custom:NAME")
    at = _parse_now(click.get_current_context(), click.Option(["--at"]), at_text) or ctx.now
    engine = ctx.engine()
    synced = engine.synced(source, object_name)
    stats = engine.feed_event(synced, record_id, event_type, at, ctx.now)
    from connector import explain as explaining

    last = explaining.explain(engine, synced, record_id)
    entry = last["history"][-1] if stats.moves.changed and last["history"] else None
    if stats.new == 0:
        click.echo("already taken in: the same event was fed before")
    elif entry and not entry["suppressed"] and entry["cause"] == "event":
        click.echo(f"{source} {object_name} {record_id}: {entry['from']} -> {entry['to']} (trigger '{entry['rule']}')")
    elif entry and entry["suppressed"]:
        click.echo(f"{source} {object_name} {record_id}: stays in {last['stage']}: {entry['reason']}")
    else:
        click.echo(f"{source} {object_name} {record_id}: stays in {last['stage']} (no trigger matches)")


@main.command()
@click.argument("source", required=False)
@click.argument("object_name", metavar="[OBJECT]", required=False)
@click.option("--once", is_flag=True, required=True, help="one full cycle, then exit (`connector run` is the daemon)")
@click.option("--dry-run", is_flag=True, help="print every move and write it would make; change nothing anywhere")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@common
def sync(ctx: Context, source: str | None, object_name: str | None, once: bool, dry_run: bool, as_json: bool) -> None:
    """One full cycle: pull, activity, timers (as of --now), write-back. Exit 1 if records failed."""
    from connector.cycle import Jobs
    from connector.progress import counting
    from connector.sync_commands import outcome_json, outcome_line

    engine = ctx.engine(with_sources=True)
    objects = engine.objects(source, object_name)
    if dry_run:
        from connector.sync_commands import sync_dry_run

        result, failed = sync_dry_run(engine, objects, ctx.now)
        click.echo(json.dumps(result, indent=2) if as_json else result["text"])
        sys.exit(1 if failed else 0)
    jobs = Jobs(engine)
    failed = False
    outcomes = []
    for synced in objects:
        with counting(f"{synced.source} {synced.name}") as report:
            outcome = jobs.once(synced, ctx.now, lambda stats: report(stats.records))
        outcomes.append(outcome_json(outcome))
        if not as_json:
            click.echo(outcome_line(outcome))
        failed = failed or outcome.failed
    if as_json:
        click.echo(json.dumps({"objects": outcomes}, indent=2))
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("source")
@click.argument("object_name", metavar="[OBJECT]", required=False)
@click.option("--full", is_flag=True, help="compare every record (the default when nothing narrower is given)")
@click.option("--since", callback=_parse_now, default=None, help="only records modified since this instant")
@click.option("--ids", default="", help="only these record ids, comma-separated")
@click.option("--remap", is_flag=True, help="after a mapping change: re-derive stages from the CRM statuses")
@click.option("--push", is_flag=True, help="write our stages' statuses where the CRM differs")
@click.option("--dry-run", is_flag=True, help="print what would change, and change nothing anywhere")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@common
def resync(
    ctx: Context,
    source: str,
    object_name: str | None,
    full: bool,
    since: datetime | None,
    ids: str,
    remap: bool,
    push: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Compare the CRM with the store and repair the drift (or show it with --dry-run)."""
    from connector.resync import ResyncOptions
    from connector.sync_commands import resync_objects

    if full and (since or ids):
        raise UsageError("--full reads every record; leave out --since and --ids, or --full")
    options = ResyncOptions(full, since, tuple(i.strip() for i in ids.split(",") if i.strip()), remap, push, dry_run)
    engine = ctx.engine(with_sources=not (remap and not (full or since or ids or push)))
    result = resync_objects(engine, engine.objects(source, object_name), options, ctx.now)
    click.echo(json.dumps(result, indent=2) if as_json else result["text"])


@main.command()
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--listen", metavar="HOST:PORT", help="serve the health page, /healthz and /metrics here (server.listen)")
@common
def run(ctx: Context, log_format: str, listen: str | None) -> None:
    """The daemon: scheduled pulls, write-back, timers and reconcile, until SIGTERM or SIGINT."""
    import threading

    from connector import logs
    from connector.config import with_listen
    from connector.daemon import Daemon, install_stop_handlers

    stop = threading.Event()
    install_stop_handlers(stop)
    if listen is not None:
        ctx._config = with_listen(ctx.config, listen)
    logs.configure(log_format, logs.secret_values(ctx.config))
    Daemon(ctx.engine(with_sources=True), stop=stop).run_forever()


@main.group()
def mapping() -> None:
    """Work with mapping files."""


@mapping.command("init")
@click.argument("source")
@click.argument("object_name", metavar="OBJECT")
@click.option("--field", "field_name", required=True, help="the picklist / enumeration field that holds the status")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="file to write (default: print it)")
@click.option("--force", is_flag=True, help="overwrite --out if it exists")
@common
def mapping_init(ctx: Context, source: str, object_name: str, field_name: str, out: Path | None, force: bool) -> None:
    """Write a starting mapping file from the CRM's live picklist (its order, its values)."""
    from connector.config import ObjectConfig, load_config
    from connector.live import initial_mapping
    from connector.mapping import read_mapping
    from connector.sources.factory import open_source
    from connector.yamlfile import suggest

    config = load_config(ctx.config_path, read_mappings=False)
    if source not in config.sources:
        names = sorted(config.sources)
        raise UsageError(f"unknown source '{source}'{suggest(source, names)}; sources: {', '.join(names)}")
    if source in config.missing_files:
        raise ConfigError(list(config.missing_files[source]))
    if out is not None and out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    settings = config.sources[source]
    probe = {object_name: ObjectConfig(status_field=field_name, mapping=out or Path("unused.yaml"))}
    crm = open_source(source, settings.model_copy(update={"objects": probe}))
    try:
        info = crm.describe_field(object_name)
    finally:
        crm.close()
    if not info.exists:
        raise UsageError(f"{source} {object_name} has no field {field_name!r}")
    if not info.is_picklist:
        raise UsageError(f"{source} {object_name}.{field_name} is a {info.type} field, not a picklist")
    text = initial_mapping(info, source, object_name, field_name)
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    _, problems = read_mapping(out)
    for problem in problems:
        click.echo(str(problem), err=True)
    click.echo(f"wrote {out}: {text.count('category:')} stages; review the categories and add triggers")


@main.command()
@click.option("--keep", is_flag=True, help="keep the temporary folder (config, database) to explore afterwards")
def demo(keep: bool) -> None:
    """Sandbox CRMs on loopback, a temporary database, a few scripted cycles: what moved and why."""
    from connector.demo import run_demo

    sys.exit(run_demo(click.echo, keep))


@main.command()
@click.option(
    "--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=Path("connector-sandbox"),
    show_default=True, help="folder for config.yaml, the CA file and the ports (reused when it exists)",
)
def sandbox(folder: Path) -> None:
    """Serve both sandbox CRMs on loopback until Ctrl-C, with a config.yaml in --dir that points at them."""
    from connector.sandbox_cmd import serve

    try:
        sys.exit(serve(folder, click.echo))
    except ConnectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@common
def status_command(ctx: Context, as_json: bool) -> None:
    """Per source/object: cursor, last run, lag, records per stage, outbox, quarantine, pauses, errors."""
    from connector import status as health
    from connector.store.glance import open_glance

    glance = open_glance(ctx.config.database_url)  # plain SQL: no engine, no ORM (see store/glance.py)
    try:
        data = health.read_status(glance, list(ctx.config.objects.values()), ctx.now)
    finally:
        glance.close()
    click.echo(json.dumps(data, indent=2) if as_json else health.render_text(data))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


from connector.cli_reports import register as _register_reports  # noqa: E402

_register_reports(main)
import connector.cli_outbox  # noqa: E402,F401  (adds `outbox` to `main`; see that module)
