"""The saga state: JSON round trips, the web view's field names, and the timers it waits for."""

from __future__ import annotations

import json

from saga_app import SagaState, SagaStatus, decide
from saga_app.listing import summarise
from saga_app.sagas import CREATE_ORDER
from saga_app.state import SagaHead
from saga_app.testing import SagaTest
from topics import StartSaga

PAYLOAD = {"customer_id": "c1", "items": [{"sku": "A", "qty": 1}], "amount": 10}


def _started(now: float = 100.0) -> SagaState:
    start = StartSaga(saga_id="s1", saga_type="create_order", payload=PAYLOAD)
    state = decide(CREATE_ORDER, None, start, now, reply_to="saga.replies").state
    assert state is not None
    return state


def test_state_round_trips_through_json() -> None:
    """What the table stores as bytes reads back as an equal state."""
    kit = SagaTest(CREATE_ORDER).start(PAYLOAD).expect_command("create_order").reply_retry()
    state = kit.state
    assert state is not None
    assert SagaState.model_validate_json(state.model_dump_json()) == state


def test_json_has_the_fields_the_web_view_promises() -> None:
    """GET /sagas/{id} shows DESIGN.md's fields for the saga, its steps and its history."""
    shown = json.loads(_started().model_dump_json())
    assert {
        "saga_id", "saga_type", "status", "context", "created_at", "updated_at", "error",
        "steps", "history",
    } <= shown.keys()  # fmt: skip
    assert {
        "name", "participant", "status", "attempts", "compensation_attempts", "started_at",
        "finished_at", "error",
    } <= shown["steps"][0].keys()  # fmt: skip
    assert {"seq", "event", "step", "attempt", "at"} <= shown["history"][0].keys()
    assert shown["status"] == "in_progress"
    assert [s["status"] for s in shown["steps"]] == ["running", "pending", "pending", "pending"]


def test_a_running_step_waits_for_its_timeout_and_the_saga_deadline() -> None:
    """A sent command has a step timer due `timeout` later, and the saga deadline is tracked."""
    timers = _started(now=100.0).timers()
    assert [(t.timer, t.step, t.kind, t.attempt, t.due_at) for t in timers] == [
        ("step", "create_order", "command", 1, 103.0),
        ("deadline", None, None, None, 160.0),
    ]


def test_a_retry_waits_for_its_backoff() -> None:
    """After a retry reply the saga waits for a backoff timer that will send the next attempt."""
    kit = SagaTest(CREATE_ORDER).start(PAYLOAD).expect_command("create_order").reply_retry()
    assert kit.state is not None
    backoff = kit.state.timers()[0]
    assert (backoff.timer, backoff.step, backoff.attempt) == ("backoff", "create_order", 2)
    assert 0.18 <= backoff.due_at <= 0.2


def test_the_deadline_stops_mattering_after_the_pivot() -> None:
    """Once the payment is charged only the step timer is left."""
    kit = SagaTest(CREATE_ORDER).start(PAYLOAD)
    for step in ("create_order", "reserve_stock", "charge_payment"):
        kit.expect_command(step).reply_success()
    assert kit.state is not None
    assert [t.timer for t in kit.state.timers()] == ["step"]


def test_finished_and_failed_sagas_wait_for_nothing() -> None:
    """Completed, compensated and failed sagas have no timers for the sweeper to track."""
    kit = SagaTest(CREATE_ORDER).start(PAYLOAD).expect_command("create_order").reply_failure()
    kit.expect_status(SagaStatus.COMPENSATED)
    assert kit.state is not None
    assert kit.state.timers() == []


def _as_a_takeover_reads_it(state: SagaState) -> SagaHead:
    return SagaHead.model_validate_json(state.model_dump_json())


def test_a_stored_state_read_without_its_history_gives_the_same_timers_and_summary() -> None:
    """A takeover reads each stored state as a `SagaHead`: what it indexes, the timers and the
    summary, is what the whole state would give, whether the saga waits in the admission
    queue, runs, retries, compensates or has completed."""
    start = StartSaga(saga_id="s1", saga_type="create_order", payload=PAYLOAD)
    queued = decide(CREATE_ORDER, None, start, 100.0, reply_to="r", queue_for=5.0).state
    running = _started()
    retrying = SagaTest(CREATE_ORDER).start(PAYLOAD).expect_command("create_order").reply_retry()
    undoing = SagaTest(CREATE_ORDER).start(PAYLOAD).expect_command("create_order").reply_success()
    undoing.expect_command("reserve_stock").reply_failure()
    done = SagaTest(CREATE_ORDER).start(PAYLOAD)
    for step in ("create_order", "reserve_stock", "charge_payment", "send_confirmation"):
        done.expect_command(step).reply_success()
    states = [queued, running, retrying.state, undoing.state, done.state]
    heads = [SagaHead.model_validate_json(s.model_dump_json()) for s in states if s is not None]
    assert [h.status for h in heads] == [
        "in_progress", "in_progress", "in_progress", "compensating", "completed"
    ]  # fmt: skip
    assert heads[0].queued
    for state, head in zip(states, heads, strict=True):
        assert state is not None
        assert head.wakeups(60.0) == state.wakeups(60.0)
        assert summarise(head) == summarise(state)
        assert (head.queued, head.running) == (state.queued, state.running)
