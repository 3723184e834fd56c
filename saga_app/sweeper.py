"""The sweeper's logic without Faust: which saga timers are due, cheaply.

A worker owns many sagas but only a few fall due at any moment. Scanning every saga each tick
would cost O(sagas in flight); `DeadlineIndex` keeps their timers in a heap so a tick costs
O(timers due · log n). Sagas change their timers on every transition, so instead of deleting
from the middle of the heap (O(n)) an entry carries the saga's generation, and entries of an
older generation are dropped when they surface (lazy invalidation). The index lives in memory
only: on partition assignment the worker rebuilds it from the states it now owns.

Its entries are tuples of plain values (strings, numbers), which the garbage collector stops
tracking after its first pass over them. As objects, a million sagas in flight made every full
pass of the collector walk 4 million of them: 2 s with nothing to collect (`make bench-scale`),
and at 600 sagas/s the worker's older passes paused it for 44-112 ms.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from saga_app.state import SagaHead, Wakeup
from topics import MessageKind, SagaTimeout, TimerKind

_Entry = tuple[float, int, str, int, TimerKind, float, str | None, MessageKind | None, int | None]
"""(due_at, order, saga_id, generation, *wakeup): when the timer may fire, the insertion order
(unique, so equal due_at pop first-in first-out and nothing after it is compared), the saga, its
generation, then the `Wakeup`'s fields. A plain tuple: the collector untracks only exact tuples."""


class DeadlineIndex:
    """The timers of the sagas one worker owns, ordered by when they fall due."""

    _COMPACT_FACTOR = 4
    """Rebuild the heap when dead entries outnumber live ones this many times over."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._generation: dict[str, int] = {}
        self._live: dict[str, int] = {}  # saga_id -> its timers not yet handed out
        self._live_total = 0
        self._counter = 0
        self._held: dict[str, float] = {}  # saga_id -> the `not_before` its timers were given

    def __len__(self) -> int:
        """Timers tracked and not yet handed out by `pop_due`."""
        return self._live_total

    def track(self, saga_id: str, timers: Iterable[Wakeup], not_before: float = 0.0) -> None:
        """Replace whatever was tracked for `saga_id` by `timers` (after each transition).

        `not_before` holds them back without changing them: a command sent late, or re-sent
        after a takeover, gets its whole timeout before its saga's timers may fire.
        """
        self.forget(saga_id)
        self._counter += 1
        generation = self._counter  # unique forever, so a forgotten saga's entries never revive
        count = 0
        for wakeup in timers:
            self._counter += 1
            due = max(wakeup.due_at, not_before)
            heapq.heappush(self._heap, (due, self._counter, saga_id, generation, *wakeup))
            count += 1
        if count:
            self._generation[saga_id] = generation
            self._live[saga_id] = count
            self._live_total += count
            if not_before:
                self._held[saga_id] = not_before
        self._maybe_compact()

    def forget(self, saga_id: str) -> None:
        """Stop tracking `saga_id` (it finished, or its partition moved away)."""
        self._live_total -= self._live.pop(saga_id, 0)
        self._generation.pop(saga_id, None)
        self._held.pop(saga_id, None)

    def holds(self) -> dict[str, float]:
        """The `not_before` of each saga whose tracked timers are held back: a takeover that
        re-reads the stored states keeps them (the states do not carry them)."""
        return dict(self._held)

    def pop_due(self, now: float) -> list[SagaTimeout]:
        """Timers due at `now` (due_at <= now), earliest first; each is handed out once."""
        due: list[SagaTimeout] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._is_live(entry):
                continue  # superseded by a later track() or forget()
            _, _, saga_id, _, timer, due_at, step, kind, attempt = entry
            due.append(Wakeup(timer, due_at, step, kind, attempt).timeout(saga_id))
            self._live_total -= 1
            left = self._live[saga_id] - 1
            if left:
                self._live[saga_id] = left
            else:
                del self._live[saga_id]
                del self._generation[saga_id]
                self._held.pop(saga_id, None)
        return due

    def next_due(self) -> float | None:
        """When the earliest live timer falls due, or None (lets a sweeper sleep until then)."""
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def clear(self) -> None:
        self._heap = []
        self._generation = {}
        self._live = {}
        self._live_total = 0
        self._held = {}

    def rebuild(self, states: Iterable[SagaHead], retention: float = 0.0) -> None:
        """Start over from the states a worker owns, e.g. after a partition assignment; finished
        sagas get their `retention` timer (none if 0)."""
        self.clear()
        for state in states:
            timers = state.wakeups(retention)
            if timers:
                self.track(state.saga_id, timers)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 64 and len(self._heap) > self._COMPACT_FACTOR * self._live_total:
            self._heap = [e for e in self._heap if self._is_live(e)]
            heapq.heapify(self._heap)

    def _is_live(self, entry: _Entry) -> bool:
        """Whether no later track() or forget() of its saga superseded `entry`."""
        return self._generation.get(entry[2]) == entry[3]


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """How far the orchestrator has read one input partition since it took the partition over."""

    processed_at: float
    """Timestamp of the last record processed there (0 if none since the takeover)."""
    caught_up: bool
    """Whether every record the partition is known to hold has been processed."""


def partition_progress(
    processed: tuple[int, float] | None, start: int, end: int
) -> PartitionProgress:
    """One partition's progress from offsets.

    `processed` is the (offset, timestamp) of the last record processed since the takeover,
    `start` the offset reading began at (the committed one), `end` the partition's end offset:
    the one taken at takeover, or a newer one the consumer has since seen.
    """
    if processed is None:
        return PartitionProgress(0.0, start >= end)
    offset, timestamp = processed
    return PartitionProgress(timestamp, offset + 1 >= end)


def sweep_watermark(now: float, partitions: Iterable[PartitionProgress]) -> float:
    """The latest time whose timers may fire without racing an unprocessed reply.

    A timer due at T may fire only when every reply produced before T has been applied: otherwise
    a worker catching up after a takeover would time out steps whose answers wait in its backlog.
    A partition read to its end is safe up to `now`; one with records left only up to the
    timestamp of the last record processed there (a partition's records arrive in time order),
    and one taken over but not read at all holds every timer.
    """
    watermark = now
    for p in partitions:
        if not p.caught_up:
            watermark = min(watermark, p.processed_at)
    return watermark
