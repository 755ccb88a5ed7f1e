"""User-facing errors: each carries what a person needs to fix it, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a user's file, pointing at where it is."""

    file: Path | str
    line: int | None
    message: str
    warning: bool = False
    key: str | None = None  # the key path in the file (sources.sfdc.ca_bundle), for `validate --json`

    def to_json(self) -> dict[str, object]:
        return {
            "file": str(self.file),
            "line": self.line,
            "key": self.key,
            "message": self.message,
            "severity": "warning" if self.warning else "error",
        }

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {'warning: ' if self.warning else ''}{self.message}"


class ConnectorError(Exception):
    """Base of the errors the CLI turns into a message and an exit code."""

    exit_code = 2


class ConfigError(ConnectorError):
    """Every problem found in the config or mapping files, reported at once (exit 2)."""

    def __init__(self, problems: list[Problem]) -> None:
        # Grouped by file in the order files were read, then by line, as a person fixes them.
        order = {str(p.file): i for i, p in reversed(list(enumerate(problems)))}
        self.problems = sorted(problems, key=lambda p: (order[str(p.file)], p.line or 0))
        errors = [p for p in self.problems if not p.warning]
        super().__init__("\n".join(str(p) for p in errors) or "invalid configuration")


class UsageError(ConnectorError):
    """A command named something that does not exist, or was called wrongly (exit 2)."""
