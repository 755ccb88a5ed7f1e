"""`connector outbox`: what waits to be written to the CRM or failed, and re-queueing dead letters.

One command with two forms, because a click group cannot take optional positional arguments and
subcommands at once (`outbox retry` would be read as a source named "retry"):

    connector outbox [SOURCE [OBJECT]] [--dead | --pending] [--json]
    connector outbox retry SOURCE OBJECT (--ids ID,... | --dead) [--json]
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from connector.cli import Context, common, main, print_json
from connector.errors import UsageError

SHOWN = 50  # items listed as text; --json lists all


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@main.command("outbox")
@click.argument("args", nargs=-1, metavar="[retry] [SOURCE [OBJECT]]")
@click.option("--dead", is_flag=True, help="only dead letters (with retry: re-queue every dead letter of the object)")
@click.option("--pending", is_flag=True, help="only items waiting to be written")
@click.option("--ids", default="", help="with retry: the record ids to re-queue, comma-separated")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@common
def outbox_command(ctx: Context, args: tuple[str, ...], dead: bool, pending: bool, ids: str, as_json: bool) -> None:
    """What waits to be written back or failed, with the CRM's words; `outbox retry` re-queues dead letters.

    \b
    connector outbox [SOURCE [OBJECT]] [--dead | --pending] [--json]
    connector outbox retry SOURCE OBJECT (--ids ID,... | --dead)
    """
    if args and args[0] == "retry":
        if pending:
            raise UsageError("outbox retry re-queues dead letters; --pending does not apply")
        _retry(ctx, args[1:], dead, ids, as_json)
        return
    if ids:
        raise UsageError("--ids goes with `connector outbox retry SOURCE OBJECT --ids ID,...`")
    if dead and pending:
        raise UsageError("give --dead or --pending, not both (neither lists both)")
    if len(args) > 2:
        raise UsageError(f"outbox takes at most SOURCE and OBJECT; got {' '.join(args)}")
    _list(ctx, args, ("dead",) if dead else ("pending",) if pending else ("pending", "dead"), as_json)


def _list(ctx: Context, args: tuple[str, ...], states: tuple[str, ...], as_json: bool) -> None:
    from connector.store import repo

    engine = ctx.engine()
    source, obj = [*args, None, None][:2]
    if source is not None:
        engine.objects(source, obj)  # an unknown name is a usage error with the closest match
    with engine.store.transaction() as session:
        total = repo.count_outbox_items(session, source, obj, states)
        items = repo.outbox_items(session, source, obj, states, limit=None if as_json else SHOWN)
        rows: list[dict[str, Any]] = [
            {
                "source": item.source,
                "object": item.object,
                "id": item.external_id,
                "status": item.status,
                "state": item.state,
                "attempts": item.attempts,
                "error": item.last_error,
                "queued_at": _iso(item.created_at),
            }
            for item in items
        ]
    if as_json:
        print_json({"items": rows})
        return
    what = " or ".join(states)
    if not rows:
        click.echo(f"nothing {what} in the outbox")
        return
    for row in rows:
        tries = f"{row['attempts']} attempt{'s' * (row['attempts'] != 1)}"
        error = f": {row['error']}" if row["error"] else ""
        click.echo(
            f"{row['source']} {row['object']} {row['id']}: {row['state']} {row['status']!r} "
            f"(queued {row['queued_at']}, {tries}){error}"
        )
    if total > len(rows):
        click.echo(f"... and {total - len(rows)} more; --json lists them all")
    if "dead" in states and any(r["state"] == "dead" for r in rows):
        click.echo("re-queue dead letters with: connector outbox retry SOURCE OBJECT --ids ID,... (or --dead)")


def _retry(ctx: Context, args: tuple[str, ...], every_dead: bool, ids_text: str, as_json: bool) -> None:
    from connector.store import repo

    if len(args) != 2:
        raise UsageError("usage: connector outbox retry SOURCE OBJECT (--ids ID,... | --dead)")
    ids = [i.strip() for i in ids_text.split(",") if i.strip()]
    if bool(ids) == every_dead:
        raise UsageError("outbox retry needs --ids ID,... or --dead (one of them)")
    engine = ctx.engine()
    synced = engine.synced(*args)
    with engine.store.transaction() as session:
        if ids:
            known = repo.load_records(session, synced.source, synced.name, ids)
            for missing in (i for i in ids if i not in known):
                close = repo.closest_external_ids(session, synced.source, synced.name, missing)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"no record '{missing}' in {synced.source} {synced.name}{hint}")
        result = repo.requeue_dead(session, synced.source, synced.name, ids or None, ctx.now)
        handled = set(result.requeued) | {i for i, _ in result.superseded}
        not_dead = [i for i in ids if i not in handled]
        states = repo.latest_outbox_states(session, synced.source, synced.name, not_dead)
    if as_json:
        print_json(
            {
                "source": synced.source,
                "object": synced.name,
                "requeued": result.requeued,
                "superseded": [{"id": i, "pending_status": s} for i, s in result.superseded],
                "not_dead": [{"id": i, "state": states.get(i)} for i in not_dead],
            }
        )
    else:
        for rid, status in result.superseded:
            click.echo(f"{rid}: a newer write-back {status!r} is already pending; the dead one is dropped")
        for rid in not_dead:
            state = states.get(rid)
            click.echo(f"{rid}: not a dead letter ({f'its last write-back is {state}' if state else 'nothing queued'})")
        click.echo(
            f"{synced.source} {synced.name}: {len(result.requeued)} dead "
            f"letter{'s' * (len(result.requeued) != 1)} re-queued, due now"
        )
    if not_dead:
        sys.exit(1)
