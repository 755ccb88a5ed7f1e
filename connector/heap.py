"""The process's long-lived objects, moved out of the cyclic garbage collector's sight once it is set up.

A pull makes thousands of container objects per page (the answer's rows, the records, their writes)
that live for the whole page, longer than the collector's youngest generation; promoted, they set off
a full collection every few pages, and a full collection walks every object of the process: the
modules, SQLAlchemy's and pydantic's structures, about 100,000 objects before the first record. On a
200,000-lead first sync that cost about 0.7 s of CPU (13 full collections); with what exists at start
frozen (`gc.freeze`), each walks only what the pull made.

Once per process, after a collection: garbage that existed then is freed first, and what is frozen is
what the process keeps anyway (imports, the config, the engine, the store's connection pool). A frozen
object is still freed by reference counting when nothing refers to it any more; only a reference cycle
made entirely of frozen objects would never be collected.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_done = False


def freeze_startup_objects() -> None:
    """Collect, then move every object that exists now to the collector's permanent generation (once)."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        gc.collect()
        gc.freeze()
