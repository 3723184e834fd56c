"""Topic names and partitioning, in one place so every component agrees on them."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aiokafka.partitioner import murmur2

DEFAULT_PARTITIONS = 8


@functools.lru_cache(maxsize=1 << 16)
def key_hash(key: bytes) -> int:
    """The hash Kafka's default partitioner gives a key (murmur2, made positive), remembered for
    the sagas in flight: aiokafka's murmur2 is pure Python, 3-6 µs a key, and a saga's key is
    hashed for each of the ~25 records it costs a worker and its participants."""
    return int(murmur2(key) & 0x7FFFFFFF)


@dataclass(frozen=True)
class TopicCatalog:
    """The saga topics under an optional prefix.

    Every topic that changes saga state has `partitions` partitions and is keyed by the raw
    saga_id bytes, so the saga table, its requests and its replies are co-partitioned.
    """

    prefix: str = ""
    partitions: int = DEFAULT_PARTITIONS

    def _name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def requests(self) -> str:
        return self._name("saga.requests")

    @property
    def replies(self) -> str:
        return self._name("saga.replies")

    @property
    def events(self) -> str:
        return self._name("saga.events")

    @property
    def dlq(self) -> str:
        return self._name("saga.dlq")

    @property
    def outcomes(self) -> str:
        """Where the tracker announces how tracked sagas ended (`SagaOutcome`)."""
        return self._name("saga.outcomes")

    def domain(self, topic: str) -> str:
        """A services' topic a tracked saga's events are on, as named in its definition."""
        return self._name(topic)

    def undomain(self, topic: str) -> str:
        """The topic's name as definitions name it: without the prefix."""
        return topic[len(self.prefix) :] if topic.startswith(self.prefix) else topic

    def commands(self, participant: str) -> str:
        """The command topic of one participant, e.g. `orders.commands`."""
        return self._name(f"{participant}.commands")

    @staticmethod
    def key(saga_id: str) -> bytes:
        """The message key of every saga topic: the raw utf-8 saga_id (see FAUST.md, point 2)."""
        return saga_id.encode()

    def partition_of(self, saga_id: str) -> int:
        """The partition a saga lives on: Kafka's default murmur2 partitioner over the raw key."""
        return key_hash(self.key(saga_id)) % self.partitions
