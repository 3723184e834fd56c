"""The garbage collector: paused while a takeover builds its indexes, tuned for records."""

from __future__ import annotations

import gc

import pytest

from saga_app.collector import (
    THRESHOLDS,
    collect_young,
    garbage_collection_paused,
    tune_for_records,
)
from saga_app.state import Wakeup
from saga_app.sweeper import DeadlineIndex
from tests.unit.test_orchestrator import CATALOG, make, record, start


def test_the_collector_is_paused_while_the_indexes_are_built_and_resumed_after() -> None:
    assert gc.isenabled()
    with garbage_collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_is_resumed_when_the_takeover_fails() -> None:
    """A takeover that fails (a broker down) is tried again; the collector must not stay off."""
    with pytest.raises(RuntimeError), garbage_collection_paused():
        raise RuntimeError("offsets unavailable")
    assert gc.isenabled()


async def test_a_saga_moved_while_the_takeover_reads_the_store_keeps_its_new_state() -> None:
    """The takeover reads stored states in chunks while records are processed: a state read
    before a record moved its saga must not bring back the old timers and summary."""
    orchestrator, store, _ = make()
    await orchestrator.handle(record(start(), "s1"))
    stale = store.states["s1"]
    orchestrator.begin_takeover(range(CATALOG.partitions), now=2000.0)
    await orchestrator.handle(
        record({"type": "abort", "saga_id": "s1", "reason": "x"}, "s1", offset=1)
    )
    orchestrator.index_taken_over([stale])
    orchestrator.end_takeover()
    assert store.states["s1"].status == "compensating"
    [timer] = orchestrator.deadlines.pop_due(float("inf"))  # the stale state had two
    assert timer.kind == "compensation"
    assert [s["status"] for s in orchestrator.listing.query()] == ["compensating"]


async def test_a_takeover_indexes_what_no_record_moved() -> None:
    orchestrator, store, _ = make()
    await orchestrator.handle(record(start(), "s1"))
    orchestrator.begin_takeover(range(CATALOG.partitions), now=2000.0)
    assert len(orchestrator.deadlines) == 0
    orchestrator.index_taken_over(list(store.states.values()))
    orchestrator.end_takeover()
    assert len(orchestrator.deadlines) == 2  # the first step's timeout and the deadline
    assert [s["status"] for s in orchestrator.listing.query()] == ["in_progress"]


def test_a_process_tuned_for_records_stops_walking_its_startup_objects() -> None:
    thresholds = gc.get_threshold()
    try:
        tune_for_records()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_young_pass_during_a_paused_takeover_stops_the_collector_tracking_its_timers() -> None:
    """The takeover collects the young generation after each chunk, the collector otherwise
    paused: the chunk's timers are then untracked, not left for one long pass at the end."""
    index = DeadlineIndex()
    with garbage_collection_paused():
        before = len(gc.get_objects())
        for i in range(5_000):
            index.track(f"s{i}", [Wakeup("deadline", 9e9 + i)])
        assert len(gc.get_objects()) - before >= 5_000
        collect_young()
        assert len(gc.get_objects()) - before < 100
    assert len(index) == 5_000
