"""A round's writes: the states it changed are in the changelog before any message of it leaves.

A worker that sent a command and died before the saga's new state was in the changelog left a
successor that never knew of it. Replaying the inputs does not always bring it back: replies and
timeouts come from two topics, and read in another order they decide otherwise (chaos run: a
step that took effect timed out instead and was never compensated, 2 of 5,000). A participant's
reply that left before its records were stored is the same window. So table writes and messages
are staged while a round of records is processed (`kafka_io._SagaConsumer`); `flush` writes the
states, waits until the broker acknowledged them, and only then hands the messages to the
producer. Whatever left the process, the next owner of the partition knows of.

Rounds make it cheap under load: one changelog round trip per round, one record per key per
round (the last value written), all messages handed over together, a batch per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

SendBatch = Callable[
    [str, int | None, list[tuple[bytes, bytes | None]]], Awaitable[list[Awaitable[Any]]]
]
"""The producer, a batch at a time: (topic, partition, [(key, value), ...]) -> the deliveries
of the batches it made. The records keep their order, each to `partition`, or to its key's
partition when None."""

STATE_TIMEOUT = 30.0
"""Seconds a flush waits for its state records' acknowledgements. A broker failover takes a few;
a record still unacknowledged after this stops the worker (it restarts and replays) instead of
holding every later output back without a word."""


class StateNotStored(Exception):
    """A state record the broker did not acknowledge: the messages that follow from it never
    leave, and the worker must stop so that its records are read again."""


class StagedWrites:
    """The changelog records and messages staged since the last flush; flushes run one at a time.

    A flush that begins while another runs waits for it, so when `flush` returns, everything
    staged before the call has left, in order.
    """

    def __init__(
        self,
        send: SendBatch,
        timeout: float = STATE_TIMEOUT,
        on_stored: Callable[[Sequence[Any]], None] | None = None,
    ) -> None:
        """`on_stored` gets the acknowledgements of each flush's state records, whatever `send`'s
        deliveries give."""
        self._send = send
        self.timeout = timeout
        self._on_stored = on_stored
        self._states: dict[tuple[str, bytes], tuple[int | None, bytes | None]] = {}
        self._messages: dict[str, list[tuple[bytes, bytes | None]]] = {}
        """Per topic, the messages staged, in order."""
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._states) + sum(map(len, self._messages.values()))

    def store(self, topic: str, partition: int | None, key: bytes, value: bytes | None) -> None:
        """Stage a changelog record (`value` None: a tombstone); a later one for the key wins."""
        self._states.pop((topic, key), None)  # keep the order of last writes
        self._states[(topic, key)] = (partition, value)

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Stage a message; it leaves after the states staged with it are acknowledged."""
        self._messages.setdefault(topic, []).append((key, value))

    async def flush(self) -> None:
        """Write the staged states, wait for their acks, then hand over the staged messages.

        Raises `StateNotStored` if a state record failed or was not acknowledged in time; the
        messages staged with it are dropped (the worker stops, and a replay stages them again).
        The messages' own acknowledgements are the offset commit's to wait for."""
        async with self._lock:
            states, self._states = self._states, {}
            messages, self._messages = self._messages, {}
            if states:
                batches: dict[tuple[str, int | None], list[tuple[bytes, bytes | None]]] = {}
                for (topic, key), (partition, value) in states.items():
                    batches.setdefault((topic, partition), []).append((key, value))
                deliveries = []
                for (topic, partition), records in batches.items():
                    deliveries += await self._send(topic, partition, records)
                acks = await self._acknowledged(deliveries)
                if self._on_stored is not None:
                    self._on_stored(acks)
            for topic, records in messages.items():
                await self._send(topic, None, records)

    async def _acknowledged(self, deliveries: list[Awaitable[Any]]) -> list[Any]:
        try:
            return await asyncio.wait_for(asyncio.gather(*deliveries), self.timeout)
        except TimeoutError:
            raise StateNotStored(
                f"{len(deliveries)} state records not acknowledged within {self.timeout:.0f}s"
            ) from None
        except Exception as e:
            raise StateNotStored(f"a state record was not stored: {e!r}") from e
