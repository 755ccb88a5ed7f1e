"""How a history entry's move reads, the same in `explain`, `sync`'s lines and the health page."""

from __future__ import annotations


def move_text(from_stage: str | None, to_stage: str | None, arrow: str = "->") -> str:
    """`New -> Working`; `(new)` for a record's first stage, `(out)` for one that left (deleted in the
    CRM). A record first seen with a status the mapping lacks has neither: it is quarantined unplaced."""
    if from_stage is None and to_stage is None:
        return "(new, no stage)"
    return f"{from_stage or '(new)'} {arrow} {to_stage or '(out)'}"
