"""`make bench-scale`: a worker holding a million sagas in flight, none due (not a test).

What a takeover and the sweeper cost at that size, measured on the worker's own pieces without
Kafka: parsing every stored state and indexing its timers and summary, a chunk at a time with a
young pass of the garbage collector after each (as `SagaWorker._index_stored_sagas` does), the
collector's full passes over what the indexes keep, then sweeper ticks with nothing due. Prints
the seconds for each, the microseconds per tick, and the bytes the in-memory indexes keep per
saga (the states themselves live in the table's store, not in memory).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saga_app import decide
from saga_app.app import TAKEOVER_CHUNK
from saga_app.collector import collect_young, garbage_collection_paused
from saga_app.listing import SagaListing
from saga_app.sagas import CREATE_ORDER
from saga_app.state import SagaHead
from saga_app.sweeper import DeadlineIndex
from topics import StartSaga

MEMORY_SAMPLE = 50_000
"""Sagas whose index memory is traced (tracing is slow; the cost per saga does not vary)."""

STARTED_AT = 1_000_000.0
"""When the sagas started: their timers fall due seconds after, the ticks run before."""


def stored_states(count: int, started_at: float = STARTED_AT) -> list[bytes]:
    """`count` create_order sagas waiting for their first step's reply, as the table holds them."""
    start = StartSaga(
        saga_id="saga-0000000",
        saga_type="create_order",
        payload={"customer_id": "c-1", "items": [{"sku": "A-1", "qty": 2}], "amount": 99},
    )
    decision = decide(CREATE_ORDER, None, start, started_at, reply_to="saga.replies")
    assert decision.state is not None
    template = decision.state.model_dump_json()
    return [template.replace("saga-0000000", f"saga-{n:07d}").encode() for n in range(count)]


def timed(what: str, seconds: float, count: int) -> None:
    print(f"  {what:<44} {seconds:8.2f} s   ({seconds / count * 1e6:6.1f} µs per saga)")


def collector_passes() -> None:
    """What the garbage collector's full passes cost with the indexes built: the first one after
    the takeover (it runs paused) walks what the young passes left, each later one what is left
    tracked. With the timers as objects, every pass walked 4 million: ~2 s each."""
    for which in ("first", "each later"):
        began = time.perf_counter()
        gc.collect()
        took = (time.perf_counter() - began) * 1000
        print(f"  {f'collector: {which} full pass':<44} {took:8.0f} ms")
    print(f"  objects the collector tracks: {len(gc.get_objects()):,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    n = args.sagas
    print(f"{n:,} create_order sagas in flight, none due")
    raw = stored_states(n)
    print(f"  stored state: {len(raw[0])} bytes of JSON each")

    deadlines, listing = DeadlineIndex(), SagaListing()
    parsing = indexing = young = 0.0
    with garbage_collection_paused():  # as the worker's takeover does, a chunk at a time
        for first in range(0, n, TAKEOVER_CHUNK):
            began = time.perf_counter()
            states = [SagaHead.model_validate_json(r) for r in raw[first : first + TAKEOVER_CHUNK]]
            parsed = time.perf_counter()
            for state in states:
                deadlines.track(state.saga_id, state.wakeups())
                listing.update(state)
            del states  # freeing them counts as indexing: the worker frees them too
            indexed = time.perf_counter()
            collect_young()
            parsing += parsed - began
            indexing += indexed - parsed
            young += time.perf_counter() - indexed
        del raw
        timed("takeover: parse every stored state", parsing, n)
        timed("takeover: index timers and summaries", indexing, n)
        timed("takeover: a young collector pass per chunk", young, n)
        collector_passes()
    print(f"  timers tracked: {len(deadlines):,}; summaries: {len(listing):,}")
    sample = [SagaHead.model_validate_json(r) for r in stored_states(MEMORY_SAMPLE)]
    tracemalloc.start()  # slows what it watches: only on a sample, after the timings
    sampled = DeadlineIndex(), SagaListing()
    sampled[0].rebuild(sample)
    sampled[1].rebuild(sample)
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  memory the indexes keep: {kept / len(sample):,.0f} bytes per saga in flight")

    ticks = []
    for tick in range(args.ticks):
        began = time.perf_counter()
        due = deadlines.pop_due(STARTED_AT + tick * 0.01)  # before any timer's due_at
        deadlines.next_due()
        ticks.append(time.perf_counter() - began)
        assert not due
    ticks.sort()
    p99 = ticks[int(len(ticks) * 0.99) - 1]
    print(
        f"  sweeper tick with nothing due: median {statistics.median(ticks) * 1e6:.1f} µs, "
        f"p99 {p99 * 1e6:.1f} µs   (goal < 5 ms)"
    )


if __name__ == "__main__":
    main()
