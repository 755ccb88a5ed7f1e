"""Reading a source's pages ahead: the next page is fetched in a background thread while the caller applies this one.

A pull spends its time in two places that need not wait for each other: the CRM's answer (network)
and deciding and committing the page (CPU and disk). `read_ahead` overlaps them and changes nothing
else the caller relies on: pages arrive in the source's order, the caller still commits each page with
its cursor, an error raised while fetching is raised again in the caller (the same exception object,
after the pages fetched before it), and leaving the `with` block early stops the fetching thread and
waits for it, so no thread outlives the pull. A page fetched ahead and never applied is simply dropped:
its cursor was never committed, so the next pull reads it again.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")

# How often a fetching thread that waits for room in the queue looks whether the caller has gone.
_POLL_SECONDS = 0.05


class _Done:
    """Marks the end of the pages."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Reader(Generic[T]):
    def __init__(self, pages: Iterator[T], depth: int) -> None:
        self._pages = pages
        # Bounded: at most `depth` pages wait here, plus one in the fetching thread's hands.
        self._queue: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=depth)
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._fetch, name="connector-read-ahead", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: T | _Done | _Failed) -> bool:
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _fetch(self) -> None:
        try:
            for page in self._pages:
                if not self._put(page):
                    return
            self._put(_Done())
        except BaseException as exc:  # handed to the caller, who raises it
            self._put(_Failed(exc))
        finally:
            # The source's generator is closed in the thread that ran it (its finally blocks run here).
            close = getattr(self._pages, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def stop(self) -> None:
        """Ask the fetching thread to end and wait for it (a fetch under way ends within the source's timeouts)."""
        self._cancelled.set()
        self._thread.join()


@contextmanager
def read_ahead(pages: Iterator[T], depth: int = 1) -> Iterator[Iterator[T]]:
    """Iterate `pages` with up to `depth` pages fetched ahead in a background thread."""
    reader = _Reader(pages, max(1, depth))
    reader.start()
    try:
        yield iter(reader)
    finally:
        reader.stop()
