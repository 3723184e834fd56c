"""An offset commit waits for every output and changelog record, and never passes a failed one.

Faust commits right after `await app.producer.flush()` (transport/consumer.py `_commit_offsets`);
`commit` below does the same with the worker's real producer and table classes, unstarted, and
fake deliveries the test acknowledges or fails by hand.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.transport.drivers.aiokafka import Producer
from faust.types import TP

from saga_app.deliveries import DeliveryFailed, PendingDeliveries
from saga_app.kafka_io import make_faust_app
from saga_app.settings import Settings
from topics.catalog import key_hash


async def commit(app: Any, committed: list[int], offset: int) -> None:
    """Faust's commit path: flush the producer, then commit the offset."""
    await app.producer.flush()
    committed.append(offset)


async def settles(task: asyncio.Task[None]) -> bool:
    """Whether `task` finishes once the loop has run everything that is ready."""
    for _ in range(20):
        await asyncio.sleep(0)  # yield to the loop; no wall-clock wait
    return task.done()


@pytest.fixture
def app(tmp_path: Any) -> Any:
    return make_faust_app(Settings(data_dir=tmp_path), "deliveries-test")


async def test_commit_waits_until_every_output_is_acknowledged(app: Any) -> None:
    outputs = [asyncio.get_running_loop().create_future() for _ in range(3)]
    for n, output in enumerate(outputs):
        app.producer.deliveries.track(output, f"command {n}")
    committed: list[int] = []
    task = asyncio.create_task(commit(app, committed, 7))
    for output in outputs[:2]:
        output.set_result("acknowledged")
    assert not await settles(task), "committed while one output was unacknowledged"
    outputs[2].set_result("acknowledged")
    assert await settles(task)
    assert committed == [7]
    assert len(app.producer.deliveries) == 0


async def test_commit_waits_for_the_state_records_a_round_wrote(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round's states go through the producer like its messages, so the commit waits for
    them too (faust's own changelog buffer gave up waiting after 0.1 s)."""
    table = app.Table("sagas", key_type=bytes, value_type=bytes)
    changelog = table.changelog_topic.get_topic_name()
    acks: list[asyncio.Future[Any]] = []

    class AIOKafkaProducer:
        """aiokafka's producer below the worker's, taking batches."""

        def create_batch(self) -> Any:
            return SimpleNamespace(append=lambda **record: True)

        async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
            acks.append(asyncio.get_running_loop().create_future())
            return acks[-1]

    monkeypatch.setattr(Producer, "_ensure_producer", lambda self: AIOKafkaProducer())
    app.staged.store(changelog, 0, b"saga-1", b'{"status": "running"}')
    flush = asyncio.create_task(app.staged.flush())
    assert not await settles(flush)
    committed: list[int] = []
    task = asyncio.create_task(commit(app, committed, 3))
    assert not await settles(task), "committed before the saga's new state reached the changelog"
    acks[0].set_result(SimpleNamespace(topic=changelog, partition=0, offset=11))
    assert await settles(flush) and await settles(task)
    assert committed == [3]


async def test_a_failed_delivery_stops_the_commit_and_the_worker(app: Any) -> None:
    failed = asyncio.get_running_loop().create_future()
    app.producer.deliveries.track(failed, "a message to orders.commands")
    failed.set_exception(KafkaTimeoutError())
    committed: list[int] = []
    with pytest.raises(DeliveryFailed, match=r"orders\.commands"):
        await commit(app, committed, 9)
    assert committed == []
    assert app.crashed
    assert app.producer.deliveries.failures == 1


async def test_failure_is_sticky_so_no_later_commit_passes_it() -> None:
    deliveries = PendingDeliveries()
    failed = asyncio.get_running_loop().create_future()
    deliveries.track(failed, "first")
    failed.set_exception(KafkaTimeoutError())
    ok = asyncio.get_running_loop().create_future()
    ok.set_result("acknowledged")
    deliveries.track(ok, "second")
    for _ in range(2):
        with pytest.raises(DeliveryFailed, match="first"):
            await deliveries.settle()


async def test_an_unanswered_delivery_fails_after_the_timeout() -> None:
    deliveries = PendingDeliveries(timeout=0.01)
    deliveries.track(asyncio.get_running_loop().create_future(), "lost")
    with pytest.raises(DeliveryFailed, match="1 messages not acknowledged"):
        await deliveries.settle()


async def test_nothing_pending_settles_at_once() -> None:
    deliveries = PendingDeliveries()
    done = asyncio.get_running_loop().create_future()
    done.set_result("acknowledged")
    deliveries.track(done, "early")
    await deliveries.settle()
    assert len(deliveries) == 0 and deliveries.failures == 0


class Batch:
    """aiokafka's batch builder, full at two records."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    def append(self, *, key: bytes, value: bytes | None, timestamp: None) -> Any:
        if len(self.records) == 2:
            return None
        self.records.append((key, value))
        return True


class BatchingProducer:
    """aiokafka's producer as the staged writes use it: batches, three partitions a topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []
        self.acks: list[asyncio.Future[Any]] = []

        async def known(topic: str) -> None:
            """The topic's metadata is at hand."""

        self.client = SimpleNamespace(
            _wait_on_metadata=known,
            cluster=SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2}),
        )

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records))
        self.acks.append(asyncio.get_running_loop().create_future())
        return self.acks[-1]


async def test_records_leave_in_batches_per_partition_in_order_each_tracked(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages go to their keys' partitions as the partitioner would send them, a full batch
    is followed by another, and each batch is one delivery the commit waits for, giving the
    offset of its last record."""
    producer = BatchingProducer()
    monkeypatch.setattr(Producer, "_ensure_producer", lambda self: producer)
    keys = [b"saga-1", b"saga-2", b"saga-1", b"saga-1"]
    records = [(key, f"command {n}".encode()) for n, key in enumerate(keys)]
    deliveries = await app._send_batch("orders.commands", None, records)
    to = {key: key_hash(key) % 3 for key in keys}
    assert to[b"saga-1"] != to[b"saga-2"]
    assert [(p, [v for _, v in batch]) for _, p, batch in producer.sent] == [
        (to[b"saga-1"], [b"command 0", b"command 2"]),
        (to[b"saga-1"], [b"command 3"]),
        (to[b"saga-2"], [b"command 1"]),
    ]
    assert len(deliveries) == len(producer.acks) == len(app.producer.deliveries)
    for n, ack in enumerate(producer.acks):
        ack.set_result(SimpleNamespace(offset=10 * n))
    counts = [len(batch) for _, _, batch in producer.sent]
    assert [await d for d in deliveries] == [
        (TP("orders.commands", p), 10 * n + count - 1)
        for n, ((_, p, _), count) in enumerate(zip(producer.sent, counts, strict=True))
    ]
    assert len(app.producer.deliveries) == 0
