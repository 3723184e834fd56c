"""A batch's states reach the changelog, acknowledged, before any of its messages leave; its
records are acked only after that. Fake producers here hand back futures the test settles."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from saga_app.kafka_io import Batches, make_faust_app
from saga_app.settings import Settings
from saga_app.staged import StagedWrites, StateNotStored


class FakeProducer:
    """Records each send in order; every delivery is a future the test settles."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int | None) -> Any:
        self.sent.append((topic, key, value, partition))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def topics(self) -> list[str]:
        return [topic for topic, *_ in self.sent]

    def acknowledge(self) -> None:
        for delivery in self.deliveries:
            if not delivery.done():
                delivery.set_result("acknowledged")


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


@dataclass
class FakeMessage:
    offset: int


@dataclass
class FakeEvent:
    message: FakeMessage


class FakeStream:
    """Faust's stream as `Batches` uses it: events, the queue behind them, acks."""

    def __init__(self, offsets: list[int]) -> None:
        self.enable_acks = True
        self.waiting: deque[FakeEvent] = deque(FakeEvent(FakeMessage(o)) for o in offsets)
        self.channel = self
        self.queue = self
        self.acked: list[int] = []

    def empty(self) -> bool:
        return not self.waiting

    async def events(self) -> Any:
        while self.waiting:
            yield self.waiting.popleft()

    async def ack(self, event: FakeEvent) -> None:
        self.acked.append(event.message.offset)


class StagingApp:
    """The app as `Batches` uses it: its staging, and crash."""

    def __init__(self, producer: FakeProducer) -> None:
        self.staged = StagedWrites(producer.send)
        self.crashed: BaseException | None = None

    async def crash(self, reason: BaseException) -> None:
        self.crashed = reason


async def test_records_are_acked_only_after_their_batch_left() -> None:
    producer = FakeProducer()
    app = StagingApp(producer)
    stream = FakeStream([10, 11, 12])

    async def handle(event: FakeEvent) -> None:
        offset = event.message.offset
        app.staged.store("sagas-changelog", 0, f"saga-{offset}".encode(), b"running")
        app.staged.send("orders.commands", f"saga-{offset}".encode(), b"create")

    run = asyncio.create_task(Batches(app, handle).run(stream))
    await settles(run)
    assert producer.topics() == ["sagas-changelog"] * 3, "one flush for the waiting records"
    assert stream.acked == [] and not stream.enable_acks
    producer.acknowledge()
    assert await settles(run)
    assert producer.topics() == ["sagas-changelog"] * 3 + ["orders.commands"] * 3
    assert stream.acked == [10, 11, 12]


async def test_a_state_not_stored_stops_the_app_and_acks_nothing() -> None:
    producer = FakeProducer()
    app = StagingApp(producer)
    stream = FakeStream([4])

    async def handle(event: FakeEvent) -> None:
        app.staged.store("sagas-changelog", 0, b"saga-4", b"running")

    run = asyncio.create_task(Batches(app, handle).run(stream))
    await settles(run)
    producer.deliveries[0].set_exception(KafkaTimeoutError())
    with pytest.raises(StateNotStored):
        await run
    assert isinstance(app.crashed, StateNotStored) and stream.acked == []


async def test_a_table_write_stages_its_changelog_record_on_the_events_partition(
    tmp_path: Any,
) -> None:
    """The worker's real table class: `table[k] = v` writes the local store at once and stages
    the changelog record, partitioned like the record being processed."""
    app = make_faust_app(Settings(data_dir=tmp_path, store="memory://"), "staged-test")
    table = app.Table("sagas", key_type=bytes, value_type=bytes, partitions=4)
    table.partition_for_key = lambda key: 3  # faust's: the current event's partition
    producer = FakeProducer()
    app.staged = StagedWrites(producer.send)
    table[b"saga-1"] = b"running"
    del table[b"saga-1"]
    table[b"saga-2"] = b"done"
    assert table.get(b"saga-2") == b"done" and table.get(b"saga-1") is None
    flush = asyncio.create_task(app.staged.flush())
    await settles(flush)
    changelog = table.changelog_topic.get_topic_name()
    assert producer.sent == [(changelog, b"saga-1", None, 3), (changelog, b"saga-2", b"done", 3)]
