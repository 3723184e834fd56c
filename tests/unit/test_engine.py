"""The engine's contract beyond the scenarios: purity, ignored events and refused inputs."""

from __future__ import annotations

import dataclasses

import pytest

from saga_app import DefinitionMismatch, InvalidEvent, SagaState, decide
from saga_app.engine import admission, last_event, outstanding_command
from saga_app.sagas import CREATE_ORDER
from saga_app.testing import SagaTest
from topics import AbortSaga, Reply, RetrySaga, SagaTimeout, StartSaga

ORDER = {"customer_id": "c1", "items": [{"sku": "A", "qty": 2}], "amount": 30}


def _reply(state: SagaState, outcome: str = "success") -> Reply:
    assert state.timer is not None
    t = state.timer
    return Reply.model_validate(
        {
            "message_id": "r",
            "in_reply_to": f"{state.saga_id}:{t.step}:{t.kind}:{t.attempt}",
            "saga_id": state.saga_id,
            "step": t.step,
            "kind": t.kind,
            "attempt": t.attempt,
            "outcome": outcome,
            "data": {"seen": t.step},
        }
    )


def _running() -> SagaState:
    kit = SagaTest(CREATE_ORDER).start(ORDER).expect_command("create_order").reply_success()
    assert kit.state is not None
    return kit.state


@pytest.mark.parametrize(
    "event",
    [
        Reply(
            message_id="r", in_reply_to="x", saga_id="ghost", step="create_order",
            kind="command", attempt=1, outcome="success",
        ),
        AbortSaga(saga_id="ghost"),
        RetrySaga(saga_id="ghost"),
        SagaTimeout(saga_id="ghost", timer="deadline", due_at=1.0),
    ],
    ids=["reply", "abort", "retry", "timeout"],
)  # fmt: skip
def test_events_for_an_unknown_saga_are_ignored(
    event: Reply | AbortSaga | RetrySaga | SagaTimeout,
) -> None:
    """Anything but a start for a saga that does not exist stores nothing and sends nothing."""
    decision = decide(CREATE_ORDER, None, event, 1.0, reply_to="saga.replies")
    assert decision == type(decision)(state=None, ignored="unknown_saga")


@pytest.mark.parametrize("outcome", ["success", "failure", "retry"])
def test_decide_never_mutates_the_state_it_is_given(outcome: str) -> None:
    """The input state is left exactly as it was, whatever the transition."""
    state = _running()
    before = state.model_dump_json()
    decision = decide(CREATE_ORDER, state, _reply(state, outcome), 5.0, reply_to="saga.replies")
    assert decision.state is not state
    assert state.model_dump_json() == before


@pytest.mark.parametrize("outcome", ["success", "failure", "retry"])
def test_replaying_an_event_gives_the_same_decision(outcome: str) -> None:
    """The same event on the same state gives equal states, commands and events."""
    state = _running()
    event = _reply(state, outcome)
    first = decide(CREATE_ORDER, state, event, 5.0, reply_to="saga.replies")
    second = decide(CREATE_ORDER, state, event, 5.0, reply_to="saga.replies")
    assert first == second
    assert [c.command.message_id for c in first.commands] == [
        c.command.message_id for c in second.commands
    ]


def test_replaying_on_a_state_read_back_from_json_gives_the_same_decision() -> None:
    """A worker that restored the state from the changelog decides exactly like the one before."""
    state = _running()
    restored = SagaState.model_validate_json(state.model_dump_json())
    event = _reply(state, "retry")
    assert decide(CREATE_ORDER, state, event, 5.0, reply_to="r") == decide(
        CREATE_ORDER, restored, event, 5.0, reply_to="r"
    )


def test_ignored_events_return_the_very_same_state() -> None:
    """An ignored event hands back the input state, so the agent can skip storing it."""
    state = _running()
    decision = decide(CREATE_ORDER, state, AbortSaga(saga_id=state.saga_id), 1.0, reply_to="r")
    assert decision.ignored is None
    assert decision.state is not None
    again = decide(
        CREATE_ORDER, decision.state, AbortSaga(saga_id=state.saga_id), 1.0, reply_to="r"
    )
    assert again.ignored == "not_running"
    assert again.state is decision.state
    assert (again.commands, again.events) == ((), ())


def test_a_start_without_saga_id_is_refused() -> None:
    """The agent must assign a saga_id before deciding a start."""
    with pytest.raises(InvalidEvent, match="needs a saga_id"):
        decide(CREATE_ORDER, None, StartSaga(saga_type="create_order"), 1.0, reply_to="r")


def test_a_start_with_another_definition_is_refused() -> None:
    """Deciding a start with the wrong saga type's definition is a bug in the caller."""
    start = StartSaga(saga_id="s", saga_type="create_run")
    with pytest.raises(
        DefinitionMismatch, match="create_run saga was given definition create_order"
    ):
        decide(CREATE_ORDER, None, start, 1.0, reply_to="r")


def test_a_saga_is_decided_only_with_its_own_version() -> None:
    """A state started on version 1 is not silently driven by version 2's steps."""
    state = _running()
    newer = dataclasses.replace(CREATE_ORDER, version=2)
    with pytest.raises(DefinitionMismatch, match="create_order v1, but was given"):
        decide(newer, state, _reply(state), 1.0, reply_to="r")


def test_in_reply_to_is_not_what_matches_a_reply() -> None:
    """Replies are matched on (step, kind, attempt); in_reply_to is informational."""
    state = _running()
    reply = _reply(state).model_copy(update={"in_reply_to": "garbage"})
    assert decide(CREATE_ORDER, state, reply, 1.0, reply_to="r").ignored is None


def test_compensation_reply_data_is_not_merged() -> None:
    """Only forward steps feed the context: what a compensation returns is not kept."""
    kit = (
        SagaTest(CREATE_ORDER).start(ORDER)
        .expect_command("create_order").reply_success({"order_id": "o1"})
        .expect_command("reserve_stock").reply_failure()
        .expect_compensation("create_order")
        .reply("success", data={"order_id": "cancelled"}, strict=True)
    )  # fmt: skip
    kit.expect_context(order_id="o1").expect_status("compensated")


def test_a_queued_start_sends_nothing_until_its_admission_is_applied() -> None:
    start = StartSaga(saga_id="q1", saga_type="create_order", payload=ORDER)
    queued = decide(CREATE_ORDER, None, start, 100.0, reply_to="r", queue_for=60.0)
    assert queued.commands == ()
    assert [e.event for e in queued.events] == ["saga_started", "saga_queued"]
    state = queued.state
    assert state is not None and state.queued and state.timers()[0].due_at == 160.0
    assert outstanding_command(CREATE_ORDER, state, reply_to="r") is None
    assert last_event(state) == queued.events[-1]
    due = admission(state)
    assert due is not None
    admitted = decide(CREATE_ORDER, state, due, 105.0, reply_to="r")
    [out] = admitted.commands
    assert out.command.attempt == 1 and out.command.message_id == "q1:create_order:command:1"
    assert admitted.state is not None and not admitted.state.queued
    assert admission(admitted.state) is None
    assert (
        admitted.state.timer is not None
        and admitted.state.timer.due_at == 105.0 + CREATE_ORDER.steps[0].timeout
    )
