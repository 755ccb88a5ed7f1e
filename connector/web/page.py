"""The Sync Health page: per object its state, pulls, stages, funnel, dead letters, quarantine and recent moves."""

from __future__ import annotations

from datetime import datetime

from connector.moves import move_text
from connector.reports import ObjectFunnel
from connector.web.html import command, document, esc, seconds, table, when, yaml_key
from connector.web.view import ObjectView

REFRESH_SECONDS = 15
BAR_WIDTH = 300  # px of the longest funnel bar
ROW = 28


def render_page(views: list[ObjectView], now: datetime, funnel_at: datetime | None = None) -> str:
    summary = table(
        ["Source", "Object", "State", "Since", "Last pull", "Records", "Pending", "Dead", "Quarantined"],
        (
            [
                esc(v.source),
                f'<a href="#{_anchor(v)}">{esc(v.object)}</a>',
                _badge(v.state.name),
                when(v.state.since),
                when(v.status["last_run"]),
                esc(v.status["records"]),
                esc(v.status["outbox_pending"]),
                esc(v.status["outbox_dead"]),
                esc(v.status["quarantined"]),
            ]
            for v in views
        ),
        "summary",
    )
    body = (
        f"<header><h1>Sync Health</h1><p>as of {when(now)}; refreshes every {REFRESH_SECONDS} s"
        + (f"; funnels as of {when(funnel_at)}" if funnel_at and funnel_at != now else "")
        + "</p></header>"
        f"<main>{lookup_form([(v.source, v.object) for v in views])}{summary}"
        f"{''.join(_object(v) for v in views)}</main>"
    )
    return document("Sync Health", body, refresh=REFRESH_SECONDS)


def lookup_form(objects: list[tuple[str, str]], chosen: tuple[str, str] | None = None, record_id: str = "") -> str:
    options = "".join(
        f'<option value="{esc(source)}/{esc(name)}"'
        + (" selected" if chosen == (source, name) else "")
        + f">{esc(source)} {esc(name)}</option>"
        for source, name in objects
    )
    return (
        '<form class="lookup" method="get" action="/record"><label>Record '
        f'<select name="object">{options}</select></label> '
        f'<input name="id" placeholder="record id" required value="{esc(record_id)}"> '
        '<button type="submit">Explain</button></form>'
    )


def _anchor(view: ObjectView) -> str:
    return "obj-" + "".join(c if c.isalnum() else "-" for c in f"{view.source}-{view.object}")


def _badge(state: str) -> str:
    return f'<span class="state state-{esc(state)}">{esc(state)}</span>'


def _object(v: ObjectView) -> str:
    s, state = v.status, v.state
    words = f'<p class="words">{esc(state.words)}</p>' if state.words else ""
    until = f" until {when(state.until)}" if state.until else ""
    api = ""
    if s["api_used"] is not None:
        api = f"<dt>API usage</dt><dd>{esc(s['api_used'])} / {esc(s['api_limit'])}</dd>"
    facts = (
        f'<dl class="facts"><dt>Since</dt><dd>{when(state.since)}{until}</dd>'
        f"<dt>Last pull</dt><dd>{when(s['last_run'])}</dd>"
        f"<dt>Lag</dt><dd>{seconds(s['lag_seconds'])}</dd>"
        f"<dt>Records</dt><dd>{esc(s['records'])}</dd>"
        f"<dt>Write-backs</dt><dd>{esc(s['outbox_pending'])} pending, {esc(s['outbox_dead'])} dead</dd>{api}</dl>"
    )
    return (
        f'<section class="object" id="{_anchor(v)}">'
        f"<h2>{esc(v.source)} {esc(v.object)} {_badge(state.name)}</h2>{words}{facts}"
        f"<h3>Funnel</h3>{funnel_svg(v.funnel)}{_unstaged(v)}"
        f"{_dead(v)}{_quarantine(v)}{_moves(v)}</section>"
    )


def funnel_svg(obj: ObjectFunnel) -> str:
    """Bars as SVG rectangles: sized by attributes, since the page's CSP allows no inline style."""
    largest = max((st.count for st in obj.stages), default=0) or 1
    rows = []
    for i, st in enumerate(obj.stages):
        y = i * ROW
        width = round(BAR_WIDTH * st.count / largest)
        conversion = "" if st.conversion is None else f" · {st.conversion:.0%} went on"
        median = "" if st.median is None else f" · median {seconds(st.median.total_seconds())}"
        rows.append(
            f'<g class="stage"><text x="0" y="{y + 18}" class="label">{esc(st.stage)}</text>'
            f'<rect x="170" y="{y + 5}" width="{width}" height="18" class="bar cat-{esc(st.category.value)}"/>'
            f'<text x="{176 + width}" y="{y + 18}" class="count">{st.count}</text>'
            f'<text x="{190 + BAR_WIDTH}" y="{y + 18}" class="detail">entered {st.entered}'
            f"{esc(conversion)}{median}</text></g>"
        )
    height = ROW * len(obj.stages) + 4
    return (
        f'<svg class="funnel" role="img" aria-label="Funnel of {esc(obj.source)} {esc(obj.object)}" '
        f'width="820" height="{height}" viewBox="0 0 820 {height}">{"".join(rows)}</svg>'
    )


def _unstaged(v: ObjectView) -> str:
    if not v.funnel.unstaged:
        return ""
    parts = ", ".join(f"{esc(name)} {count}" for name, count in v.funnel.unstaged.items())
    return f'<p class="note">Outside the mapping\'s stages: {parts}</p>'


def _dead(v: ObjectView) -> str:
    count = v.status["outbox_dead"]
    if not count:
        return ""
    rows = [
        [esc(d.id), esc(d.status), f'<span class="crm">{esc(d.error)}</span>', esc(d.attempts), when(d.at)]
        for d in v.dead
    ]
    shown = f" (the latest {len(v.dead)})" if len(v.dead) < count else ""
    ids = ",".join(dict.fromkeys(d.id for d in v.dead))
    retry_ids = command("connector", "outbox", "retry", v.source, v.object, "--ids", ids)
    retry_all = command("connector", "outbox", "retry", v.source, v.object, "--dead")
    retry = (
        f'<p>Retry these: <code class="cmd">{esc(retry_ids)}</code><br>'
        f'Retry every dead letter: <code class="cmd">{esc(retry_all)}</code></p>'
    )
    headers = ["Record", "Status we wanted", "The CRM's message", "Attempts", "At"]
    return f"<h3>Dead letters: {esc(count)}{shown}</h3>{table(headers, rows, 'dead')}{retry}"


def _quarantine(v: ObjectView) -> str:
    if not v.quarantine:
        return ""
    items = []
    for group in v.quarantine:
        more = f" and {group.count - len(group.ids)} more" if group.count > len(group.ids) else ""
        items.append(
            f'<li><span class="status">{esc(group.status)}</span>: {group.count} '
            f"record{'s' if group.count != 1 else ''} ({esc(', '.join(group.ids))}{more})<br>"
            f'add to the mapping\'s <code>statuses:</code> <code class="yaml">  {esc(yaml_key(group.status))}: '
            "&lt;Stage&gt;</code></li>"
        )
    stages = ", ".join(esc(name) for name in v.stage_names)
    return (
        f"<h3>Quarantined: {esc(v.status['quarantined'])} (CRM status not in the mapping)</h3>"
        f'<ul class="quarantine">{"".join(items)}</ul><p class="note">Stages: {stages}</p>'
    )


def _moves(v: ObjectView) -> str:
    if not v.moves:
        return '<h3>Recent transitions</h3><p class="note">none yet</p>'
    rows = []
    for m in v.moves:
        cause = esc(m.cause) + (f" {esc(m.detail)}" if m.detail else "")
        if m.rule:
            cause += f", trigger <q>{esc(m.rule)}</q>"
        moved = esc(move_text(m.from_stage, m.to_stage, "\u2192"))
        outcome = f'<span class="suppressed">not moved: {esc(m.reason)}</span>' if m.suppressed else "moved"
        rows.append([when(m.at), esc(m.id), moved, cause, outcome])
    return "<h3>Recent transitions</h3>" + table(["At", "Record", "Move", "Cause", "Outcome"], rows, "moves")
