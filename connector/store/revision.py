"""The schema's newest revision, read from the migration files' text: no alembic, no SQLAlchemy.

Alembic and its dependencies take longer to import than `status` takes to run: a store already at
head (the usual case) is recognised from the files alone, and alembic is only loaded to migrate.
"""

from __future__ import annotations

import re
from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*['"]?([\w-]+)""", re.MULTILINE)


def head_from_files() -> str | None:
    """The newest revision named by the migration files; None if unsure (then alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = {m.group(1): m.group(2) for m in _REVISION.finditer(path.read_text(encoding="utf-8"))}
        if "revision" not in found:
            return None
        revisions.add(found["revision"])
        if found.get("down_revision", "None") != "None":
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None
