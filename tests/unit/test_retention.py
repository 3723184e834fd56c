"""Retention: a finished saga waits for one more timer, and when it falls due the agent deletes
the saga from its store. Time is injected (`now`, record timestamps), never slept."""

from __future__ import annotations

import pytest

from saga_app import InvalidEvent, SagaState, decide
from saga_app.engine import expire
from saga_app.sagas import CREATE_ORDER
from saga_app.testing import SagaTest
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
