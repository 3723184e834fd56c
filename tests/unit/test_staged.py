"""A round's states reach the changelog, acknowledged, before any of its messages leave. The
fake producer here hands back futures the test settles."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from saga_app.staged import StagedWrites, StateNotStored


class FakeProducer:
    """Records each record sent in order; every batch's delivery is a future the test settles."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, partition: int | None, records: list[tuple[bytes, bytes | None]]
    ) -> list[asyncio.Future[Any]]:
        """A batch: its records in order, one delivery for them all."""
        self.sent += [(topic, key, value, partition) for key, value in records]
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return [delivery]

    def topics(self) -> list[str]:
        return [topic for topic, *_ in self.sent]

    def acknowledge(self) -> None:
        for delivery in self.deliveries:
            if not delivery.done():
                delivery.set_result(SimpleNamespace(topic="none", partition=0, offset=0))


async def settles(task: asyncio.Task[Any]) -> bool:
    """Whether `task` finishes once the loop has run everything that is ready."""
    for _ in range(20):
        await asyncio.sleep(0)  # yield to the loop; no wall-clock wait
    return task.done()


async def test_messages_leave_only_after_the_states_are_acknowledged() -> None:
    producer = FakeProducer()
    staged = StagedWrites(producer.send)
    staged.store("sagas-changelog", 2, b"saga-1", b'{"status": "running"}')
    staged.send("payments.commands", b"saga-1", b"charge")
    flush = asyncio.create_task(staged.flush())
    assert not await settles(flush)
    assert producer.sent == [("sagas-changelog", b"saga-1", b'{"status": "running"}', 2)]
    producer.acknowledge()
    assert await settles(flush)
    assert producer.topics() == ["sagas-changelog", "payments.commands"]
    assert len(staged) == 0


async def test_one_record_per_key_per_flush_carries_the_last_value() -> None:
    producer = FakeProducer()
    staged = StagedWrites(producer.send)
    for status in (b"running", b"compensating"):
        staged.store("sagas-changelog", 0, b"saga-1", status)
    staged.store("sagas-changelog", 1, b"saga-2", b"running")
    staged.store("sagas-changelog", 0, b"saga-1", None)
    flush = asyncio.create_task(staged.flush())
    await settles(flush)
    producer.acknowledge()
    assert await settles(flush)
    assert producer.sent == [
        ("sagas-changelog", b"saga-2", b"running", 1),
        ("sagas-changelog", b"saga-1", None, 0),
    ]


async def test_a_state_the_broker_refused_keeps_its_messages_back() -> None:
    producer = FakeProducer()
    stored: list[Any] = []
    staged = StagedWrites(producer.send, on_stored=stored.extend)
    staged.store("sagas-changelog", 0, b"saga-1", b"running")
    staged.send("payments.commands", b"saga-1", b"charge")
    flush = asyncio.create_task(staged.flush())
    await settles(flush)
    producer.deliveries[0].set_exception(KafkaTimeoutError())
    with pytest.raises(StateNotStored, match="KafkaTimeoutError"):
        await flush
    assert producer.topics() == ["sagas-changelog"] and stored == []


async def test_a_state_never_acknowledged_fails_the_flush_after_the_timeout() -> None:
    producer = FakeProducer()
    staged = StagedWrites(producer.send, timeout=0)
    staged.store("sagas-changelog", 0, b"saga-1", b"running")
    staged.send("payments.commands", b"saga-1", b"charge")
    with pytest.raises(StateNotStored, match="1 state records not acknowledged"):
        await staged.flush()
    assert producer.topics() == ["sagas-changelog"]


async def test_a_flush_returns_only_once_what_was_staged_before_it_left() -> None:
    """Two agents of one app share the staging: the second's flush finds its writes taken by
    the first's, still waiting for acks, and must not return before they left."""
    producer = FakeProducer()
    staged = StagedWrites(producer.send)
    staged.store("answered-changelog", 0, b"m-1", b"ok")
    staged.send("saga.replies", b"saga-1", b"reply from inventory")
    first = asyncio.create_task(staged.flush())
    await settles(first)
    second = asyncio.create_task(staged.flush())
    assert not await settles(second), "returned while the reply it covers had not left"
    producer.acknowledge()
    assert await settles(first) and await settles(second)
    assert producer.topics() == ["answered-changelog", "saga.replies"]
