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

from saga_app.deliveries import DeliveryFailed, PendingDeliveries
from saga_app.kafka_io import make_faust_app
from saga_app.settings import Settings


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

    async def send(self: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        acks.append(asyncio.get_running_loop().create_future())
        return acks[-1]

    monkeypatch.setattr(Producer, "send", send)  # aiokafka's, below the worker's producer
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
