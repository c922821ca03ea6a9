"""Keep what start-up built out of the garbage collector's way (long-running processes: API, worker, ``up``).

A full collection walks every object the collector tracks. Once started, the API process holds about 250,000
(modules, classes, routes, validators, SQLAlchemy mappers), and a full collection took 150–230 ms here: a
stall of the event loop that every request in flight waits out (it was the p99 of reads in bench/load.py).
What start-up built lives as long as the process, so :func:`freeze_startup_heap` moves it into the permanent
generation the collector skips (``gc.freeze``); a full collection then walks only what came later (a few
milliseconds). Called once per process, after start-up and before serving.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("windflow.heap")


def freeze_startup_heap() -> int:
    """Collect once, then freeze everything alive; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("start-up heap frozen: %d objects out of the collector's way", frozen)
    return frozen
