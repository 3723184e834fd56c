"""The garbage collector, tuned for a process that handles records all day.

Nearly everything a record makes is freed by reference counting; the collector only looks for
cycles, and by default it does so every 700 allocations, walking the young objects each time
and every object now and then. In `make bench-e2e` that was a third of the participants' CPU
and pauses of up to 100 ms in the worker.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

THRESHOLDS = (20_000, 10, 10)
"""Collect the young objects every 20,000 net allocations instead of 700; the older
generations as often as before, relative to that (Python's own heuristic still holds full
collections back until enough long-lived objects are new)."""


def tune_for_records() -> None:
    """Call once the process is set up: what exists by then (modules, the app, its settings)
    lives as long as the process, so the collector stops walking it (`gc.freeze`), and it
    collects less often. 2,000 sagas at once, interleaved runs: time in the collector 0.6 s
    (worker) and 1.2 s (participants) -> 0.06 s, longest pause 104 -> 16-19 ms; throughput
    within the runs' noise (307-341 tuned, 323 default sagas/s)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextlib.contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """Build many long-lived objects without the collector walking them again and again.

    Parsing every stored state at a takeover ran 18 times slower with the collector on at
    20,000 sagas, and worse the more there were (`make bench-scale`). Nothing built here is
    garbage; whatever garbage others make meanwhile is collected once this ends.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def collect_young() -> None:
    """Collect the youngest generation now, while what it holds is few objects, fresh in cache.

    A takeover indexes a million sagas with the collector paused. Their timers are tuples that
    a pass stops tracking (saga_app.sweeper), but the first pass after the pause met them all at
    once: 0.5-0.6 s with the event loop blocked. After each chunk of 1,000 a pass takes ~0.2 ms
    (`make bench-scale`: 0.21 s for a million, and the full pass after them 128 ms, not 634)."""
    gc.collect(0)
