"""`connector import` and `connector report funnel`: parse, call, print.

`connector.cli` imports this module at its end and calls `register(main)`. Either module may be
imported first: `register` is defined before this module imports `connector.cli`, and commands
defined after a call to it are added at the end of this module.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from connector import importer

_groups: list[click.Group] = []


def register(main: click.Group) -> None:
    """Add `import` and `report` to the CLI's main group."""
    _groups.append(main)
    if "report" in globals():
        _add(main)


from connector.cli import Context, common  # noqa: E402
from connector.errors import UsageError  # noqa: E402

LARGE = 2000  # rows to apply from which progress is shown
SHOWN_REJECTS = 10


def _progress(total: int) -> Callable[[int, int], None] | None:
    """A rich progress bar on a terminal; plain lines otherwise; nothing for small files."""
    if total < LARGE:
        return None
    stream = sys.stderr
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(file=stream), transient=True,
        )
        task = bar.add_task("import", total=total)
        bar.start()

        def update(done: int, _total: int) -> None:
            bar.update(task, completed=done)
            if done >= _total:
                bar.stop()

        return update

    def line(done: int, _total: int) -> None:
        click.echo(f"import: {done}/{_total} rows applied", err=True)

    return line


@click.command("import")
@click.argument("file", metavar="FILE.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", required=True, help="the source's name in config.yaml")
@click.option("--object", "object_name", required=True, help="the object, e.g. Lead or contacts")
@click.option("--id-column", default=None, help="the column with record ids (default: id, Record ID, ...)")
@click.option("--stage-column", default=None,
              help="the column with stage names or CRM statuses (default: stage, status)")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write rejected rows (default FILE.rejects.csv, when there are any)")
@click.option("--dry-run", is_flag=True, help="check every row and write the rejects; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print one JSON summary (rejects included) instead of text")
@common
def import_command(
    ctx: Context, file: Path, source: str, object_name: str, id_column: str | None, stage_column: str | None,
    rejects_path: Path | None, dry_run: bool, as_json: bool,
) -> None:
    """Set stages from a CSV (by stage name or CRM status); write-backs are queued; bad rows are rejected.

    Exit 0 when every row applied, 1 when some were rejected, 2 for bad usage.
    """
    from connector import importer

    engine = ctx.engine()
    synced = engine.synced(source, object_name)
    report = importer.run_import(
        engine, synced, file, ctx.now, id_column=id_column, stage_column=stage_column,
        rejects_path=rejects_path, dry_run=dry_run, progress=_progress,
    )
    if as_json:
        click.echo(json.dumps(_import_json(report), indent=2))
        sys.exit(1 if report.rejected else 0)
    click.echo(
        f"read {file.name}: {importer.describe_encoding(report.encoding)}, "
        f"{importer.describe_delimiter(report.delimiter)}-delimited; ids from '{report.id_column}', "
        f"stages from '{report.stage_column}'"
    )
    for reject in report.rejects[:SHOWN_REJECTS]:
        click.echo(f"{file.name}:{reject.line}: {reject.reason}", err=True)
    if report.rejected > SHOWN_REJECTS:
        click.echo(f"... and {report.rejected - SHOWN_REJECTS} more rejected rows", err=True)
    verb = "would apply" if dry_run else "applied"
    queued = "" if dry_run else f"; {report.writebacks} write-backs queued"
    where = f"; rejects in {report.rejects_file}" if report.rejects_file and report.rejected else ""
    click.echo(
        f"{'dry run: ' if dry_run else ''}{source} {object_name}: {report.rows} rows: {report.applied} {verb}, "
        f"{report.rejected} rejected, {report.unchanged} unchanged{queued}{where}"
    )
    if report.rejected:
        sys.exit(1)


def _import_json(report: importer.ImportReport) -> dict[str, Any]:
    return {
        "source": report.source,
        "object": report.object,
        "file": str(report.file),
        "dry_run": report.dry_run,
        "encoding": report.encoding,
        "delimiter": report.delimiter,
        "id_column": report.id_column,
        "stage_column": report.stage_column,
        "rows": report.rows,
        "applied": report.applied,
        "rejected": report.rejected,
        "unchanged": report.unchanged,
        "writebacks_queued": 0 if report.dry_run else report.writebacks,
        "rejects": [{"line": r.line, "reason": r.reason} for r in report.rejects],
        "rejects_file": str(report.rejects_file) if report.rejects_file and report.rejected else None,
    }


@click.group()
def report() -> None:
    """Reports over the store: the funnel."""


def _since(value: str | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    from connector.durations import parse_duration

    text = value.strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {value!r}: give a date (2026-01-31), an ISO 8601 instant, or a duration back from now (30d)"
        ) from None
    if len(text) == 10:  # a date: from its start, UTC
        parsed = datetime.combine(parsed.date(), time(), UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@report.command("funnel")
@click.argument("source", required=False)
@click.argument("object_name", metavar="[OBJECT]", required=False)
@click.option("--since", "since_text", default=None, help="only moves since: a date, an ISO instant, or 30d")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "png"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write to this file (png: default funnel.png)")
@common
def funnel_command(
    ctx: Context, source: str | None, object_name: str | None, since_text: str | None, fmt: str, out: Path | None
) -> None:
    """Per object: records in each stage now, conversion to a later stage, median time in stage, losses."""
    from connector import reports

    engine = ctx.engine()
    objects = engine.objects(source, object_name)
    funnels = reports.funnel(engine, objects, _since(since_text, ctx.now), ctx.now)
    if fmt == "png":
        path = out or Path("funnel.png")
        reports.render_png(funnels, path)
        click.echo(f"wrote {path}")
        return
    if fmt == "json":
        text = json.dumps(reports.to_json(funnels, ctx.now), indent=2) + "\n"
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(reports.CSV_COLUMNS)
        writer.writerows(reports.to_rows(funnels, ctx.now))
        text = buffer.getvalue()
    else:
        text = reports.render_table(funnels) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")


def _add(main: click.Group) -> None:
    main.add_command(import_command)
    main.add_command(report)


for _main in _groups:  # `connector.cli` was imported first from here, and registered before the commands existed
    _add(_main)
