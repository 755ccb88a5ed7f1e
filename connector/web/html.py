"""Small HTML builders: every value from a CRM, a mapping or the config goes through `esc`."""

from __future__ import annotations

import html
import json
import re
import shlex
from collections.abc import Iterable
from datetime import datetime

from connector.explain import _iso

STYLESHEET = "/static/health.css"
_PLAIN_YAML = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.()/-]*")


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(value: datetime | str | None) -> str:
    """A timestamp in a <time> element (UTC), or a dash."""
    text = _iso(value) if isinstance(value, datetime) else value
    if not text:
        return "&ndash;"
    shown = text.replace("T", " ")[:19] + " UTC" if len(text) >= 19 else text  # to the second: people read it
    return f'<time datetime="{esc(text)}">{esc(shown)}</time>'


def seconds(value: float | None) -> str:
    if value is None:
        return "&ndash;"
    value = int(value)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} s"


def command(*words: str) -> str:
    """A shell command a user can paste: names with spaces or quotes stay one word."""
    return " ".join(shlex.quote(w) for w in words)


def yaml_key(text: str) -> str:
    """A status as a YAML mapping key: plain when that reads back the same, else double-quoted (JSON is YAML)."""
    plain = (
        _PLAIN_YAML.fullmatch(text)
        and text == text.strip()
        and text.lower() not in {"yes", "no", "on", "off", "true", "false", "null"}
    )
    return text if plain else json.dumps(text, ensure_ascii=False)


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller); headers are ours."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def document(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{meta}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="stylesheet" href="{STYLESHEET}"></head>'
        f"<body>{body}</body></html>\n"
    )
