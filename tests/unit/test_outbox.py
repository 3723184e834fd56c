"""Outputs leave only after the state they follow from is in the changelog, in decision order,
and the commit waits until the broker acknowledged them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from saga_app.deliveries import DeliveryFailed, PendingDeliveries
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator
from saga_app.outbox import Outbox, StateNotStored
from saga_app.state import SagaState
from tests.unit.test_orchestrator import CATALOG, SAGAS, DictStore, ListPublisher, record, start


class Producer:
    """Records what was handed over and gives each message a delivery the test settles."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        self.sent.append(value)
        delivery = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def acknowledge_all(self) -> None:
        for delivery in self.deliveries:
            if not delivery.done():
                delivery.set_result("acknowledged")


def wired() -> tuple[Producer, PendingDeliveries, Outbox]:
    """An outbox sending to a fake producer, its batches tracked by the commit's deliveries."""
    producer, commit = Producer(), PendingDeliveries()
    return producer, commit, Outbox(producer.send, track=commit.track)


def pending() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def run_ready() -> None:
    for _ in range(20):
        await asyncio.sleep(0)  # yield to the loop; no wall-clock wait


def message(text: str) -> tuple[str, bytes, bytes]:
    return ("t.orders.commands", b"s1", text.encode())


async def test_messages_wait_for_their_state_and_keep_their_order() -> None:
    producer, _, outbox = wired()
    first, second = pending(), pending()
    await outbox.send_after(first, 0, [message("a1"), message("a2")])
    await outbox.send_after(second, 1, [message("b")])
    second.set_result("stored")
    await run_ready()
    assert producer.sent == [], "sent before the state it follows from was stored"
    first.set_result("stored")
    await run_ready()
    assert producer.sent == [b"a1", b"a2", b"b"]


async def test_the_commit_waits_until_the_held_messages_are_acknowledged() -> None:
    producer, commit, outbox = wired()
    stored = pending()
    await outbox.send_after(stored, 0, [message("a")])
    settle = asyncio.create_task(commit.settle())
    stored.set_result("stored")
    await run_ready()
    assert producer.sent == [b"a"]
    assert not settle.done(), "the commit went on before the broker acknowledged the output"
    producer.acknowledge_all()
    await run_ready()
    assert settle.done() and settle.exception() is None


async def test_a_state_never_stored_sends_nothing_and_stops_the_commit() -> None:
    producer, commit, outbox = wired()
    lost, stored = pending(), pending()
    await outbox.send_after(lost, 0, [message("lost")])
    await outbox.send_after(stored, 0, [message("kept")])
    lost.set_exception(KafkaTimeoutError())
    stored.set_result("stored")
    await run_ready()
    assert producer.sent == [b"kept"]
    producer.acknowledge_all()
    with pytest.raises(DeliveryFailed, match=StateNotStored.__name__):
        await asyncio.wait_for(commit.settle(), timeout=5)


async def test_a_revoked_partition_held_messages_never_leave() -> None:
    producer, commit, outbox = wired()
    revoked, kept = pending(), pending()
    await outbox.send_after(revoked, 3, [message("revoked")])
    await outbox.send_after(kept, 1, [message("kept")])
    outbox.forget({3})
    revoked.set_result("stored")
    kept.set_result("stored")
    await run_ready()
    assert producer.sent == [b"kept"]
    producer.acknowledge_all()
    await asyncio.wait_for(commit.settle(), timeout=5)
    assert len(outbox) == 0


class SlowChangelogStore(DictStore):
    """A table whose changelog records are acknowledged only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.changelog: list[asyncio.Future[Any]] = []

    def put(self, state: SagaState) -> asyncio.Future[Any]:
        super().put(state)
        self.changelog.append(pending())
        return self.changelog[-1]


async def test_a_command_leaves_only_once_the_saga_state_that_sent_it_is_stored() -> None:
    """A worker that dies before the saga's state reached the changelog has sent nothing: the
    next owner, deciding from the changelog, never misses a step that took effect."""
    store, publisher = SlowChangelogStore(), ListPublisher()
    outbox = Outbox(publisher.send)
    metrics = SagaMetrics(CollectorRegistry())
    orchestrator = Orchestrator(CATALOG, SAGAS, store, publisher, metrics, outbox=outbox)
    await orchestrator.handle(record(start(), "s1"))
    await run_ready()
    assert store.states["s1"].status == "in_progress"
    assert publisher.sent == []
    store.changelog[0].set_result("stored")
    await run_ready()
    [command] = publisher.to("t.orders.commands")
    assert command["step"] == "create_order"
    assert publisher.to("t.saga.events")[0]["event"] == "saga_started"
