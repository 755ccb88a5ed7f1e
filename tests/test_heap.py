"""`connector sync` and `run` freeze the objects their setup made, once: what the pull makes after that
is still collected, cycles included, so a long-running daemon does not grow."""

from __future__ import annotations

import gc
import weakref

from connector.heap import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_objects_made_after_the_freeze_are_still_collected() -> None:
    freeze_startup_objects()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    freeze_startup_objects()  # once per process: a second call freezes nothing more
    assert gc.get_freeze_count() == frozen
    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle, which only the collector frees
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
