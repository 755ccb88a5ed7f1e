"""Cells a spreadsheet would run as a formula, made inert on the way out and restored on the way in.

Excel, LibreOffice and Google Sheets treat a cell that starts with `=`, `+`, `-` or `@` as a formula
(and a leading tab or carriage return can hide one), so a CRM value such as `=HYPERLINK(...)` written
verbatim into a CSV would run when an admin opens the file (OWASP "CSV Injection"). Every CSV the
connector writes passes its text cells through `neutralise`, which puts a `'` in front; spreadsheets
show the cell as text without the quote. Numbers stay numbers.

The importer reads such a cell back through `restore`, which takes off exactly that quote (a `'`
followed by one of those characters), so a rejects file can be fixed and imported again as it is.
The cost: a stage or id that really starts with `'=` cannot be imported; no CRM id does.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def restore(cell: str) -> str:
    if cell.startswith("'") and cell[1:2] and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def neutralise_row(row: list[Any]) -> list[Any]:
    return [neutralise(cell) for cell in row]
