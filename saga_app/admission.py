"""How many sagas run at once: a burst of starts waits its turn instead of timing out.

5,000 sagas started at once sent 5,000 first commands at once; the participants took longer than
a step's timeout to work through them, so 7,000 steps timed out and 583 sagas that would have
completed compensated (`make bench-e2e --count 5000`). So a start beyond `max_running` is stored
*queued*: the saga exists and is visible, but its first command waits until a running saga on
its partition finishes, oldest start first (`SagaState.queued`).

The limit is the whole cluster's, split evenly over the saga partitions: the participants that
get overloaded serve every worker, and a partition's share never changes with its owner. Each
partition admits only when one of its own records is processed, because the table writes of a
record go to that record's partition (FAUST.md 1). A queued saga's first attempt is a backoff
timer: if no room comes within its wait, it fires and the saga starts anyway, so a limit set too
low slows sagas down but never stops them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from saga_app.state import SagaHead


class Admission:
    """The running and queued sagas of the partitions one worker owns."""

    def __init__(self, max_running: int, partitions: int, partition_of: Callable[[str], int]):
        """`max_running`: sagas running at once across the cluster (0: no limit)."""
        self.per_partition = math.ceil(max_running / partitions) if max_running > 0 else 0
        self._partition_of = partition_of
        self._running: dict[int, set[str]] = {}
        self._queued: dict[int, dict[str, float]] = {}
        """Per partition, saga_id -> created_at of the queued sagas, oldest first."""

    @property
    def limited(self) -> bool:
        return self.per_partition > 0

    def queued(self) -> int:
        """Sagas waiting for room on the owned partitions."""
        return sum(map(len, self._queued.values()))

    def must_queue(self, partition: int) -> bool:
        """Whether a new start on `partition` waits: no room, or older starts wait already."""
        if not self.limited:
            return False
        return bool(self._queued.get(partition)) or not self._has_room(partition)

    def next_to_admit(self, partition: int) -> str | None:
        """The oldest queued saga on `partition` if it has room now; taken off the queue."""
        queue = self._queued.get(partition)
        if not queue or not self._has_room(partition):
            return None
        saga_id = next(iter(queue))
        del queue[saga_id]
        return saga_id

    def update(self, state: SagaHead) -> None:
        """Note where a saga stands after a transition. Tracked sagas take no room: nobody
        holds them back, their services run them."""
        if not self.limited or state.mode == "tracked":
            return
        partition = self._partition_of(state.saga_id)
        running, queued = self._running.setdefault(partition, set()), self._queued.get(partition)
        if state.queued:
            running.discard(state.saga_id)
            self._queued.setdefault(partition, {})[state.saga_id] = state.created_at
            return
        if queued:
            queued.pop(state.saga_id, None)
        if state.running:
            running.add(state.saga_id)
        else:
            running.discard(state.saga_id)

    def forget(self, saga_id: str) -> None:
        """A saga was deleted from the table."""
        partition = self._partition_of(saga_id)
        self._running.get(partition, set()).discard(saga_id)
        self._queued.get(partition, {}).pop(saga_id, None)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._running.pop(partition, None)
            self._queued.pop(partition, None)

    def clear(self) -> None:
        self._running, self._queued = {}, {}

    def order_queues(self) -> None:
        """Oldest start first again, after sagas were noted in another order (a takeover)."""
        for partition, queue in self._queued.items():
            self._queued[partition] = dict(sorted(queue.items(), key=lambda item: item[1]))

    def _has_room(self, partition: int) -> bool:
        return len(self._running.get(partition, ())) < self.per_partition
