"""Progress on long work: a live counter on a terminal, a plain line per page otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click


@contextmanager
def counting(label: str) -> Iterator[Callable[[int], None]]:
    """Yields `report(records so far)`; the total of a pull is not known in advance."""
    stream = sys.stderr
    if not stream.isatty():
        yield lambda count: click.echo(f"{label}: {count} records read", err=True)
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn(f"{label}: {{task.completed}} records read"),
        TimeElapsedColumn(),
        console=Console(file=stream),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda count: bar.update(task, completed=count)
