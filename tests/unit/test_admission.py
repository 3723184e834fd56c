"""A burst waits its turn: starts beyond `max_running` are queued and run as others finish."""

from __future__ import annotations

import itertools
import json
from typing import Any

from prometheus_client import CollectorRegistry

from saga_app.admission import Admission
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator
from saga_app.record import Record
from tests.unit.test_orchestrator import CATALOG, ORDER, SAGAS, DictStore, ListPublisher

COMMANDS = "t.orders.commands"
PARTITION = 1


def ids_on(partition: int, count: int) -> list[str]:
    """`count` saga ids that hash to `partition`, in order."""
    found = (f"s{n}" for n in itertools.count())
    return list(itertools.islice((i for i in found if CATALOG.partition_of(i) == partition), count))


def make(per_partition: int = 1) -> tuple[Orchestrator, DictStore, ListPublisher]:
    store, publisher = DictStore(), ListPublisher()
    admissions = Admission(
        per_partition * CATALOG.partitions, CATALOG.partitions, CATALOG.partition_of
    )
    orchestrator = Orchestrator(
        CATALOG,
        SAGAS,
        store,
        publisher,
        SagaMetrics(CollectorRegistry()),
        admissions=admissions,
        queue_wait=60.0,
    )
    return orchestrator, store, publisher


_offsets = itertools.count()


def record(value: dict[str, Any], topic: str = CATALOG.requests, at: float = 1000.0) -> Record:
    saga_id = value["saga_id"]
    return Record(
        topic,
        CATALOG.partition_of(saga_id),
        next(_offsets),
        CATALOG.key(saga_id),
        json.dumps(value).encode(),
        at,
    )


def start(saga_id: str) -> Record:
    return record(
        {"type": "start", "saga_type": "create_order", "saga_id": saga_id, "payload": ORDER}
    )


def first_commands(publisher: ListPublisher) -> list[str]:
    return [c["saga_id"] for c in publisher.to(COMMANDS) if c["attempt"] == 1]


async def fail_first_step(orchestrator: Orchestrator, saga_id: str) -> None:
    """Answer the saga's first command with a failure: nothing to compensate, so it finishes."""
    reply = {
        "message_id": f"r-{saga_id}",
        "in_reply_to": f"{saga_id}:create_order:command:1",
        "saga_id": saga_id,
        "step": "create_order",
        "kind": "command",
        "attempt": 1,
        "outcome": "failure",
        "error": "no",
    }
    await orchestrator.handle(record(reply, topic=CATALOG.replies, at=1001.0))


async def test_a_start_beyond_the_limit_is_stored_queued_without_a_command() -> None:
    orchestrator, store, publisher = make()
    first, second = ids_on(PARTITION, 2)
    await orchestrator.handle(start(first))
    await orchestrator.handle(start(second))
    assert first_commands(publisher) == [first]
    queued = store.states[second]
    assert queued.queued and queued.status == "in_progress"
    assert [h.event for h in queued.history] == ["saga_started", "saga_queued"]
    assert queued.timer is not None and queued.timer.due_at == 1060.0  # starts anyway by then
    assert orchestrator.admissions.queued() == 1


async def test_a_saga_that_finishes_makes_room_for_the_oldest_queued_one() -> None:
    orchestrator, store, publisher = make()
    running, older, newer = ids_on(PARTITION, 3)
    for saga_id in (running, older, newer):
        await orchestrator.handle(start(saga_id))
    await fail_first_step(orchestrator, running)
    assert store.states[running].status == "compensated"
    assert first_commands(publisher) == [running, older]
    admitted = store.states[older]
    assert not admitted.queued and admitted.steps[0].attempts == 1
    assert admitted.timer is not None and admitted.timer.timer == "step"
    assert store.states[newer].queued


async def test_other_partitions_have_room_of_their_own() -> None:
    orchestrator, _, publisher = make()
    [here] = ids_on(PARTITION, 1)
    [there] = ids_on(PARTITION + 1, 1)
    await orchestrator.handle(start(here))
    await orchestrator.handle(start(there))
    assert first_commands(publisher) == [here, there]


async def test_a_queued_saga_whose_wait_ran_out_starts_anyway() -> None:
    orchestrator, store, publisher = make()
    running, waiting = ids_on(PARTITION, 2)
    await orchestrator.handle(start(running))
    await orchestrator.handle(start(waiting))
    due = orchestrator.deadlines.pop_due(1060.0)
    [due] = [t for t in due if t.saga_id == waiting and t.timer == "backoff"]
    await orchestrator.handle(record(due.model_dump(), at=1060.0))
    assert first_commands(publisher) == [running, waiting]
    assert not store.states[waiting].queued


async def test_an_aborted_queued_saga_leaves_the_queue_with_nothing_to_compensate() -> None:
    orchestrator, store, publisher = make()
    running, aborted, later = ids_on(PARTITION, 3)
    for saga_id in (running, aborted, later):
        await orchestrator.handle(start(saga_id))
    await orchestrator.handle(record({"type": "abort", "saga_id": aborted, "reason": "x"}))
    assert store.states[aborted].status == "compensated"
    await fail_first_step(orchestrator, running)
    assert first_commands(publisher) == [running, later]
    assert publisher.to("t.orders.compensations") == []


async def test_a_takeover_restores_who_runs_and_who_waits() -> None:
    before, store, _ = make()
    running, older, newer = ids_on(PARTITION, 3)
    for saga_id in (running, older, newer):
        await before.handle(start(saga_id))
    after, _, publisher = make()
    after.store = store
    after.rebuild_indexes(list(store.states.values()), owned=range(CATALOG.partitions), now=2000.0)
    assert after.admissions.queued() == 2
    await fail_first_step(after, running)
    assert first_commands(publisher) == [older]


async def test_no_limit_queues_nothing() -> None:
    orchestrator, _, publisher = make(per_partition=0)
    saga_ids = ids_on(PARTITION, 5)
    for saga_id in saga_ids:
        await orchestrator.handle(start(saga_id))
    assert first_commands(publisher) == saga_ids
