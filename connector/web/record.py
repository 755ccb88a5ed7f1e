"""The record lookup: what `connector explain` says about one record, as a page."""

from __future__ import annotations

from typing import Any

from connector.moves import move_text
from connector.web.html import document, esc, table, when
from connector.web.page import lookup_form


def render_record(
    objects: list[tuple[str, str]],
    chosen: tuple[str, str] | None,
    record_id: str,
    data: dict[str, Any] | None,
    problem: str | None,
) -> str:
    form = lookup_form(objects, chosen, record_id)
    back = '<p><a href="/">&larr; Sync Health</a></p>'
    if data is None:
        message = f'<p class="problem">{esc(problem)}</p>' if problem else ""
        return document("Record lookup", f"<main>{back}{form}{message}</main>")
    return document(f"{data['source']} {data['object']} {data['id']}", f"<main>{back}{form}{_explained(data)}</main>")


def _explained(d: dict[str, Any]) -> str:
    stage = f"{esc(d['stage'])} ({esc(d['category'])})" if d["stage"] else "no stage"
    locked = f"yes (sticky stage set by {esc(d['set_by'])})" if d["locked"] else "no"
    flags = []
    if d["quarantined"]:
        flags.append(f"quarantined: the CRM status <q>{esc(d['quarantined_status'])}</q> is not in the mapping")
    if d["deleted"]:
        flags.append("deleted in the CRM: out of the funnel")
    if d["converted"]:
        flags.append("converted lead: never written to")
    if d["pending_writeback"]:
        flags.append(f"pending write-back: <q>{esc(d['pending_writeback'])}</q>")
    facts = (
        f'<dl class="facts"><dt>Stage</dt><dd class="stage">{stage}</dd>'
        f"<dt>CRM status</dt><dd>{esc(d['remote_status'])}</dd><dt>Set by</dt><dd>{esc(d['set_by'])}</dd>"
        f"<dt>Locked</dt><dd>{locked}</dd><dt>In stage since</dt><dd>{when(d['stage_entered_at'])}</dd>"
        f"<dt>Last activity</dt><dd>{when(d['last_activity_at'])}</dd></dl>"
    )
    notes = "".join(f'<p class="flag">{f}</p>' for f in flags)
    writebacks = (
        table(
            ["Status", "State", "Attempts", "The CRM's message", "At"],
            (
                [
                    esc(w["status"]),
                    esc(w["state"]),
                    esc(w["attempts"]),
                    f'<span class="crm">{esc(w["error"])}</span>',
                    when(w["at"]),
                ]
                for w in d["writebacks"]
            ),
            "writebacks",
        )
        if d["writebacks"]
        else ""
    )
    options = "".join(
        f"<li>{esc(o['trigger'])}: on {esc(o['on'])} &rarr; {esc(o['to'])}</li>" for o in d["triggers_from_here"]
    )
    history = table(
        ["At", "Move", "Cause", "Outcome"],
        (
            [
                when(h["at"]),
                esc(move_text(h["from"], h["to"], "\u2192")),
                esc(h["cause"])
                + (f" {esc(h['detail'])}" if h["detail"] else "")
                + (f", trigger <q>{esc(h['rule'])}</q>" if h["rule"] else ""),
                f'<span class="suppressed">not moved: {esc(h["reason"])}</span>' if h["suppressed"] else "moved",
            ]
            for h in reversed(d["history"])
        ),
        "history",
    )
    return (
        f'<section class="record"><h2>{esc(d["source"])} {esc(d["object"])} <span class="id">{esc(d["id"])}</span>'
        f"</h2>{facts}{notes}"
        + (f"<h3>Write-backs</h3>{writebacks}" if writebacks else "")
        + (f"<h3>Triggers that can move it from here</h3><ul>{options}</ul>" if options else "")
        + f"<h3>History, newest first</h3>{history}</section>"
    )
