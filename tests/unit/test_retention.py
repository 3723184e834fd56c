"""Retention: a finished saga waits for one more timer, and when it falls due the agent deletes
the saga from its store. Time is injected (`now`, record timestamps), never slept."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from saga_app import InvalidEvent, SagaState, decide
from saga_app.engine import expire
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator
from saga_app.record import Record
from saga_app.registry import SagaRegistry
from saga_app.sagas import CREATE_ORDER
from saga_app.testing import SagaTest
from tests.unit.test_orchestrator import CATALOG, SAGAS, DictStore, ListPublisher
from topics import SagaTimeout, parse_request

ORDER = {"customer_id": "c1", "items": [{"sku": "A", "qty": 1}], "amount": 10}
DAY = 86400.0


def _completed(saga_id: str = "s1", at: float = 0.0) -> SagaState:
    kit = SagaTest(CREATE_ORDER, saga_id=saga_id, start_time=at).start(ORDER)
    for step in ("create_order", "reserve_stock", "charge_payment", "send_confirmation"):
        kit.expect_command(step).reply_success()
    kit.expect_status("completed")
    assert kit.state is not None
    return kit.state


def _failed_kit() -> SagaTest:
    """A saga whose compensation failed past its attempts: `failed`, waiting for an operator."""
    kit = (
        SagaTest(CREATE_ORDER).start(ORDER)
        .expect_command("create_order").reply_success()
        .expect_command("reserve_stock").reply_failure()
        .expect_compensation("create_order", attempt=1)
    )  # fmt: skip
    for attempt in range(2, 6):
        kit.reply_failure("orders db down").advance(2)
        kit.expect_compensation("create_order", attempt=attempt)
    return kit.reply_failure("orders db down").expect_status("failed")


def _retention(saga_id: str = "s1", due_at: float = 0.0) -> SagaTimeout:
    return SagaTimeout(saga_id=saga_id, timer="retention", due_at=due_at)


# -- the timer ---------------------------------------------------------------------------------


def test_a_finished_saga_waits_for_its_retention_after_its_last_transition() -> None:
    """A completed saga's only timer is the retention one, due `retention` after it finished."""
    state = _completed(at=100.0)
    [timer] = state.timers(retention=DAY)
    assert (timer.timer, timer.step, timer.kind, timer.attempt) == ("retention", None, None, None)
    assert timer.due_at == state.updated_at + DAY
    assert state.timers() == []  # retention 0: kept forever, nothing to wait for


def test_a_failed_saga_has_the_same_retention() -> None:
    """A saga failed for good gets the retention timer too, counted from when it failed."""
    state = _failed_kit().state
    assert state is not None
    assert [(t.timer, t.due_at) for t in state.timers(DAY)] == [
        ("retention", state.updated_at + DAY)
    ]


def test_a_running_saga_has_no_retention_timer() -> None:
    """Retention only starts once the saga has finished."""
    kit = SagaTest(CREATE_ORDER).start(ORDER).expect_command("create_order")
    assert kit.state is not None
    assert [t.timer for t in kit.state.timers(DAY)] == ["step", "deadline"]


def test_the_retention_timer_is_a_valid_timeout_request() -> None:
    """The sweeper's message is the contract's `timeout` with `timer: retention`."""
    [timer] = _completed().timers(DAY)
    assert parse_request(timer.model_dump_json().encode()) == timer


# -- the decision ------------------------------------------------------------------------------


def test_a_finished_saga_is_deleted_once_its_retention_has_passed() -> None:
    """At or after finish time + retention the decision is to delete, and nothing is sent."""
    state = _completed()
    due = state.updated_at + DAY
    decision = expire(state, _retention(due_at=due), due, retention=DAY)
    assert decision.delete and decision.ignored is None
    assert decision.state is state
    assert (decision.commands, decision.events) == ((), ())
    assert expire(state, _retention(due_at=due), due + 5 * DAY, retention=DAY).delete


def test_a_saga_is_kept_until_its_retention_has_passed() -> None:
    """A retention timer stamped before the saga is old enough is stale: the saga stays."""
    state = _completed()
    decision = expire(state, _retention(due_at=0.0), state.updated_at + DAY - 0.001, retention=DAY)
    assert (decision.delete, decision.ignored) == (False, "stale_timeout")
    assert decision.state is state


def test_retention_zero_keeps_sagas_forever() -> None:
    """With retention 0 no retention timer deletes anything, however old the saga."""
    decision = expire(_completed(), _retention(), 1e12, retention=0.0)
    assert (decision.delete, decision.ignored) == (False, "stale_timeout")


def test_a_failed_saga_retried_meanwhile_is_kept() -> None:
    """An operator retry makes the saga run again: its old retention timer is stale."""
    kit = _failed_kit()
    assert kit.state is not None
    timer = kit.state.timers(DAY)[0]
    kit.retry().expect_status("compensating")
    assert kit.state is not None
    decision = expire(kit.state, timer, timer.due_at + 1, retention=DAY)
    assert (decision.delete, decision.ignored) == (False, "stale_timeout")


def test_a_saga_that_failed_again_later_counts_from_its_new_failure() -> None:
    """The timer of its first failure is stale; the retention restarts at the latest one."""
    kit = _failed_kit()
    assert kit.state is not None
    first = kit.state.timers(DAY)[0]
    kit.advance(3600).retry()
    for attempt in range(6, 11):
        kit.expect_compensation("create_order", attempt=attempt)
        kit.reply_failure("still down").advance(2)
    kit.expect_status("failed")
    state = kit.state
    assert state is not None
    assert expire(state, first, first.due_at, retention=DAY).ignored == "stale_timeout"
    assert expire(state, first, state.updated_at + DAY, retention=DAY).delete


def test_a_retention_timer_for_a_saga_already_gone_deletes_again() -> None:
    """A replay after the deletion repeats it, so a tombstone lost with the worker is re-sent."""
    decision = expire(None, _retention(), 5.0, retention=DAY)
    assert decision == type(decision)(state=None, delete=True)


def test_expire_is_pure() -> None:
    """Deciding twice on the same state gives equal decisions and leaves the state untouched."""
    state = _completed()
    before = state.model_dump_json()
    now = state.updated_at + DAY
    assert expire(state, _retention(), now, retention=DAY) == expire(
        state, _retention(), now, retention=DAY
    )
    assert state.model_dump_json() == before


def test_retention_timers_go_to_expire_and_other_timers_to_decide() -> None:
    """Each entry point refuses the other's timers, so neither guesses at them."""
    state = _completed()
    with pytest.raises(InvalidEvent, match="expire"):
        decide(CREATE_ORDER, state, _retention(), 1.0, reply_to="r")
    with pytest.raises(InvalidEvent, match="retention timers"):
        expire(state, SagaTimeout(saga_id="s1", timer="deadline", due_at=1.0), 1.0, retention=DAY)


# -- the agent ---------------------------------------------------------------------------------


def _orchestrator(
    store: DictStore, publisher: ListPublisher, retention: float = DAY, sagas: SagaRegistry = SAGAS
) -> Orchestrator:
    metrics = SagaMetrics(CollectorRegistry())
    return Orchestrator(CATALOG, sagas, store, publisher, metrics, retention=retention)


def _request(value: bytes, saga_id: str, timestamp: float, offset: int = 0) -> Record:
    return Record(CATALOG.requests, 0, offset, saga_id.encode(), value, timestamp)


def _expired_count(orchestrator: Orchestrator) -> float:
    value = orchestrator.metrics.registry.get_sample_value(
        "saga_expired_total", {"saga_type": "create_order", "status": "completed"}
    )
    return value or 0.0


async def test_the_sweeper_sends_the_retention_timer_and_the_agent_deletes_the_saga() -> None:
    """Due at finish + retention, the timer goes out on saga.requests; applying it deletes."""
    store, publisher = DictStore(), ListPublisher()
    orchestrator = _orchestrator(store, publisher)
    state = _completed()
    store.put(state)
    orchestrator.rebuild_indexes([state], [0], 0.0)
    assert orchestrator.listing.query()[0]["saga_id"] == "s1"
    due = state.updated_at + DAY

    assert await orchestrator.sweep(due - 1, owns=lambda p: True) == 0
    assert await orchestrator.sweep(due, owns=lambda p: True) == 1
    [(topic, key, value)] = publisher.sent
    assert (topic, key, value["type"], value["timer"]) == (
        "t.saga.requests",
        b"s1",
        "timeout",
        "retention",
    )
    publisher.sent.clear()

    await orchestrator.handle(_request(json.dumps(value).encode(), "s1", due + 0.01))
    assert store.states == {}
    assert store.deleted == ["s1"]
    assert orchestrator.listing.query() == []
    assert len(orchestrator.deadlines) == 0
    assert publisher.sent == []  # no commands, no events, no dead letter
    assert _expired_count(orchestrator) == 1


async def test_a_saga_finishing_in_the_agent_gets_its_retention_timer() -> None:
    """The transition that finishes a saga tracks its retention timer in the index."""
    store, publisher = DictStore(), ListPublisher()
    orchestrator = _orchestrator(store, publisher)
    start = {"type": "start", "saga_id": "s1", "saga_type": "create_order", "payload": ORDER}
    await orchestrator.handle(_request(json.dumps(start).encode(), "s1", 1000.0))
    for offset, step in enumerate(
        ("create_order", "reserve_stock", "charge_payment", "send_confirmation"), 1
    ):
        [command] = [
            v for t, _, v in publisher.sent if t.endswith("commands") and v["step"] == step
        ]
        reply = {
            "message_id": f"{command['message_id']}:reply",
            "in_reply_to": command["message_id"],
            "saga_id": "s1",
            "step": step,
            "kind": "command",
            "attempt": 1,
            "outcome": "success",
        }
        raw = json.dumps(reply).encode()
        await orchestrator.handle(Record(CATALOG.replies, 0, offset, b"s1", raw, 1000.0 + offset))
    assert store.states["s1"].status == "completed"
    assert orchestrator.deadlines.next_due() == 1004.0 + DAY


async def test_an_early_retention_timer_keeps_the_saga() -> None:
    """A timer record stamped before the saga is old enough changes nothing."""
    store, publisher = DictStore(), ListPublisher()
    orchestrator = _orchestrator(store, publisher)
    state = _completed()
    store.put(state)
    raw = _retention().model_dump_json().encode()
    await orchestrator.handle(_request(raw, "s1", state.updated_at + DAY - 1))
    assert store.states == {"s1": state}
    assert publisher.sent == []


async def test_a_retention_timer_replayed_after_the_deletion_deletes_again_quietly() -> None:
    """No dead letter for a saga that is gone: the store gets the (idempotent) delete again."""
    store, publisher = DictStore(), ListPublisher()
    orchestrator = _orchestrator(store, publisher)
    raw = _retention("gone").model_dump_json().encode()
    await orchestrator.handle(_request(raw, "gone", 5.0))
    assert store.deleted == ["gone"]
    assert publisher.sent == []
    assert _expired_count(orchestrator) == 0


async def test_sagas_of_a_version_no_longer_loaded_expire_too() -> None:
    """Deleting needs no definition, so a retired version's finished sagas do not stay forever."""
    store, publisher = DictStore(), ListPublisher()
    orchestrator = _orchestrator(store, publisher, sagas=SagaRegistry([]))
    state = _completed()
    store.put(state)
    raw = _retention().model_dump_json().encode()
    await orchestrator.handle(_request(raw, "s1", state.updated_at + DAY))
    assert store.states == {}
    assert publisher.sent == []


async def test_without_retention_finished_sagas_wait_for_nothing() -> None:
    """Retention 0 (an Orchestrator's default) indexes no timer for a finished saga."""
    orchestrator = Orchestrator(
        CATALOG, SAGAS, DictStore(), ListPublisher(), SagaMetrics(CollectorRegistry())
    )
    orchestrator.rebuild_indexes([_completed()], [0], 0.0)
    assert len(orchestrator.deadlines) == 0
