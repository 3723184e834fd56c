"""The deadline index: due timers come out in order, once, in O(due · log n)."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from saga_app import DeadlineIndex
from saga_app.sagas import CREATE_ORDER
from saga_app.state import Wakeup
from saga_app.testing import SagaTest
from topics import SagaTimeout


def _timer(due_at: float, attempt: int = 1) -> Wakeup:
    return Wakeup("step", due_at, step="a", kind="command", attempt=attempt)


def test_pop_due_returns_due_timers_earliest_first() -> None:
    """Timers due by `now` come out in due order; later ones stay."""
    index = DeadlineIndex()
    index.track("b", [_timer(2.0)])
    index.track("a", [_timer(1.0)])
    index.track("c", [_timer(9.0)])
    assert [t.saga_id for t in index.pop_due(5.0)] == ["a", "b"]
    assert len(index) == 1
    assert index.next_due() == 9.0


def test_each_timer_is_handed_out_once() -> None:
    """A timer popped once is not popped again."""
    index = DeadlineIndex()
    index.track("a", [_timer(1.0)])
    assert len(index.pop_due(1.0)) == 1
    assert index.pop_due(2.0) == []
    assert len(index) == 0


def test_track_replaces_what_a_saga_waited_for() -> None:
    """After a transition only the saga's new timers count; the old ones never fire."""
    index = DeadlineIndex()
    index.track("a", [_timer(1.0, attempt=1)])
    index.track("a", [_timer(4.0, attempt=2)])
    assert len(index) == 1
    assert index.pop_due(2.0) == []
    assert [t.attempt for t in index.pop_due(4.0)] == [2]


def test_forget_drops_a_saga() -> None:
    """A forgotten saga (finished, or its partition moved) has no timers left."""
    index = DeadlineIndex()
    index.track("a", [_timer(1.0)])
    index.forget("a")
    index.forget("never-tracked")
    assert len(index) == 0
    assert index.next_due() is None
    assert index.pop_due(10.0) == []


def test_rebuild_indexes_the_timers_of_owned_states() -> None:
    """After a partition assignment the index is rebuilt from the states the worker owns."""
    definition = CREATE_ORDER
    running = SagaTest(definition, saga_id="running").start({}).state
    finished = SagaTest(definition, saga_id="done").start({}).reply_failure().state
    assert running is not None and finished is not None
    index = DeadlineIndex()
    index.track("stale", [_timer(0.0)])
    index.rebuild([running, finished])
    assert len(index) == 2  # the step timer and the deadline of the running saga
    assert {t.saga_id for t in index.pop_due(1e9)} == {"running"}


def test_superseded_entries_are_compacted() -> None:
    """Re-tracking the same sagas over and over does not grow the heap without bound."""
    index = DeadlineIndex()
    for round_ in range(200):
        for saga in range(10):
            index.track(f"s{saga}", [_timer(1000.0 + round_)])
    assert len(index) == 10
    assert len(index._heap) <= 4 * 10 + 64


def test_pop_due_only_looks_at_due_entries() -> None:
    """Popping a few due timers out of many in flight touches only the due ones."""
    index = DeadlineIndex()
    for i in range(10_000):
        index.track(f"s{i}", [_timer(100.0 + i)])
    heap_before = len(index._heap)
    assert len(index.pop_due(104.0)) == 5
    assert len(index._heap) == heap_before - 5


def test_timers_in_flight_leave_nothing_for_the_garbage_collector_to_walk() -> None:
    """A worker holds two timers per saga in flight; once collected, they are plain values the
    collector no longer tracks, so its passes do not grow with the sagas in flight (as objects,
    a million sagas made every full pass walk 4 million of them)."""
    index = DeadlineIndex()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        index.track(f"s{i}", [_timer(100.0 + i), Wakeup("deadline", 900.0 + i)])
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert len(index) == 20_000
    assert [t.saga_id for t in index.pop_due(100.0)] == ["s0"]


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("track"), st.integers(0, 5), st.lists(st.integers(0, 20), max_size=3)),
        st.tuples(st.just("forget"), st.integers(0, 5), st.just([])),
        st.tuples(st.just("pop"), st.integers(0, 25), st.just([])),
    ),
    max_size=60,
)


@given(_OPS)
@settings(max_examples=200, deadline=None)
def test_index_behaves_like_a_naive_scan(ops: list[tuple[str, int, list[int]]]) -> None:
    """Any sequence of track/forget/pop_due gives what scanning every saga's timers would."""
    index = DeadlineIndex()
    naive: dict[str, list[SagaTimeout]] = {}
    for op, number, dues in ops:
        saga = f"s{number}"
        if op == "track":
            timers = [_timer(float(d), attempt=k + 1) for k, d in enumerate(dues)]
            index.track(saga, timers)
            naive[saga] = [timer.timeout(saga) for timer in timers]
        elif op == "forget":
            index.forget(saga)
            naive.pop(saga, None)
        else:
            now = float(number)
            expected = sorted(
                (t for ts in naive.values() for t in ts if t.due_at <= now),
                key=lambda t: t.due_at,
            )
            got = index.pop_due(now)
            assert sorted(got, key=repr) == sorted(expected, key=repr)
            assert [t.due_at for t in got] == sorted(t.due_at for t in got)
            for saga_id in list(naive):
                naive[saga_id] = [t for t in naive[saga_id] if t.due_at > now]
        assert len(index) == sum(len(ts) for ts in naive.values())


def test_watermark_is_now_when_every_partition_is_read_to_its_end() -> None:
    """With nothing left to read anywhere, every timer due by now may fire."""
    from saga_app.sweeper import partition_progress, sweep_watermark

    progress = [
        partition_progress((9, 50.0), start=0, end=10),  # read up to the last offset
        partition_progress(None, start=7, end=7),  # nothing was left to read at takeover
    ]
    assert sweep_watermark(100.0, progress) == 100.0


def test_watermark_holds_at_the_last_record_of_a_partition_with_records_left() -> None:
    """A partition still holding unread records holds back timers due after its last one."""
    from saga_app.sweeper import partition_progress, sweep_watermark

    read = partition_progress((9, 90.0), start=0, end=10)
    catching_up = partition_progress((41, 42.0), start=0, end=60)  # its last record is from 42
    assert sweep_watermark(100.0, [read, catching_up]) == 42.0


def test_a_partition_taken_over_holds_every_timer_until_its_backlog_is_read() -> None:
    """Nothing read yet of a backlog: no timer fires, however long the first fetch takes."""
    from saga_app.sweeper import partition_progress, sweep_watermark

    untouched = partition_progress(None, start=3, end=8)
    assert not untouched.caught_up
    assert sweep_watermark(100.0, [untouched]) == 0.0
    assert partition_progress((6, 99.0), start=3, end=8).caught_up is False
    assert partition_progress((7, 99.0), start=3, end=8).caught_up is True
