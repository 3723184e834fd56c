"""The two bridges between the orchestrator and Faust: the saga table and the producer.

Both stay bytes-in, bytes-out at the Faust boundary (FAUST.md, points 2 and 3): the table is
declared with bytes keys and values and keyed by the raw saga_id, exactly like the topics, so a
saga's state, requests and replies share one partition and web routing finds its owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from saga_app.state import SagaState

log = structlog.get_logger("saga.kafka")


class SagaRepository:
    """Typed access to the saga table: `SagaState` in, JSON bytes in the changelog."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, saga_id: str) -> SagaState | None:
        raw = self.table.get(saga_id.encode())
        return None if raw is None else SagaState.model_validate_json(raw)

    def get_raw(self, saga_id: str) -> bytes | None:
        """The stored JSON itself, for views that only pass it on."""
        raw = self.table.get(saga_id.encode())
        return None if raw is None else bytes(raw)

    def put(self, state: SagaState) -> None:
        """Store a state; only ever called from the orchestrator agent (FAUST.md, point 1)."""
        self.table[state.saga_id.encode()] = state.model_dump_json().encode()

    def all(self) -> Iterator[SagaState]:
        """Every state in the local store; callers filter by the partitions they own."""
        for _key, raw in self.table.items():
            yield SagaState.model_validate_json(raw)


class FaustPublisher:
    """Publishes through the Faust producer and waits for the broker's acknowledgement.

    Faust would otherwise attach a message sent from an agent to the current event and publish it
    only at commit; we need the delivery confirmed before the saga state moves on (FAUST.md,
    point 5), so messages are forced out now. Retriable broker errors are retried with backoff
    rather than dropped: a lost command would be a stuck saga.
    """

    def __init__(self, app: Any, max_backoff: float = 5.0) -> None:
        self.app = app
        self.max_backoff = max_backoff
        self._topics: dict[str, Any] = {}

    def _topic(self, name: str) -> Any:
        topic = self._topics.get(name)
        if topic is None:
            topic = self.app.topic(name, key_type=bytes, value_type=bytes)
            self._topics[name] = topic
        return topic

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        delay = 0.1
        while True:
            try:
                delivery = await self._topic(topic).send(key=key, value=value, force=True)
                await delivery
                return
            except KafkaError as e:
                if not getattr(e, "retriable", False):
                    raise
                log.warning("publish_retry", topic=topic, error=str(e), retry_in=delay)
                await asyncio.sleep(delay)  # backoff between broker retries, not a test wait
                delay = min(delay * 2, self.max_backoff)
