"""Given/expect scripts for every behaviour of the engine, on DESIGN.md's example sagas."""

from __future__ import annotations

import dataclasses

from saga_app import RetryPolicy, Step
from saga_app.sagas import CREATE_EXPERIMENT, CREATE_ORDER, CREATE_RUN
from saga_app.testing import SagaTest

ORDER = {"customer_id": "c1", "items": [{"sku": "A", "qty": 2}], "amount": 30}
TIMEOUT = 3.0  # the example sagas' step timeout
FIRST_BACKOFF = 0.2  # their initial delay (jitter only shortens it)


def order() -> SagaTest:
    return SagaTest(CREATE_ORDER).start(ORDER)


def order_at_payment() -> SagaTest:
    return (
        order()
        .expect_command("create_order").reply_success({"order_id": "o1"})
        .expect_command("reserve_stock").reply_success({"reservation_id": "r1"})
        .expect_command("charge_payment")
    )  # fmt: skip


# -- happy path -------------------------------------------------------------------------------


def test_happy_path_runs_the_steps_in_order_and_completes() -> None:
    """Each success sends the next step's command; after the last one the saga is completed."""
    (
        order()
        .expect_command("create_order", attempt=1, action="create_order", payload=ORDER)
        .reply_success({"order_id": "o1"})
        .expect_command("reserve_stock", action="reserve_stock")
        .reply_success({"reservation_id": "r1"})
        .expect_command("charge_payment", action="charge")
        .reply_success({"payment_id": "p1"})
        .expect_command("send_confirmation", action="send_confirmation")
        .reply_success()
        .expect_no_command()
        .expect_status("completed")
        .expect_event("saga_completed")
    )


def test_reply_data_is_passed_to_later_steps() -> None:
    """A success's data is merged into the context that later commands carry."""
    kit = order_at_payment()
    assert kit.last_command.payload == {**ORDER, "order_id": "o1", "reservation_id": "r1"}
    kit.expect_context(order_id="o1", reservation_id="r1", amount=30)


def test_commands_carry_deterministic_ids_and_the_reply_topic() -> None:
    """Message ids are `{saga_id}:{step}:{kind}:{attempt}` and replies go to saga.replies."""
    command = order().expect_command("create_order").last_command
    assert command.message_id == "saga-1:create_order:command:1"
    assert command.reply_to == "saga.replies"
    assert (command.saga_id, command.saga_type, command.kind) == (
        "saga-1",
        "create_order",
        "command",
    )


def test_every_transition_is_published_and_recorded_in_order() -> None:
    """Saga events carry increasing seqs and mirror the history shown in the web view."""
    kit = order().expect_command("create_order").reply_success()
    assert kit.state is not None
    assert [(e.seq, e.event, e.step) for e in kit.events] == [
        (1, "saga_started", None),
        (2, "step_started", "create_order"),
        (3, "step_succeeded", "create_order"),
        (4, "step_started", "reserve_stock"),
    ]
    assert [(h.seq, h.event, h.step) for h in kit.state.history] == [
        (e.seq, e.event, e.step) for e in kit.events
    ]


def test_a_second_start_is_a_no_op() -> None:
    """Starting a saga_id that exists changes nothing and sends nothing."""
    order().expect_command("create_order").start(ORDER).expect_ignored(
        "duplicate_start"
    ).expect_no_command()


# -- failure and compensation -----------------------------------------------------------------


def test_failure_compensates_the_steps_done_in_reverse() -> None:
    """A failure reply compensates the succeeded steps, latest first, one at a time."""
    (
        order_at_payment()
        .reply_failure("credit limit exceeded")
        .expect_step("charge_payment", "failed")
        .expect_compensation("reserve_stock", action="release_stock", attempt=1)
        .expect_no_command()
        .reply_success()
        .expect_compensation("create_order", action="cancel_order")
        .reply_success()
        .expect_no_command()
        .expect_status("compensated")
        .expect_step("create_order", "compensated")
        .expect_step("reserve_stock", "compensated")
        .expect_compensations_in_order(["reserve_stock", "create_order"])
        .expect_error("credit limit exceeded")
    )


def test_a_failing_first_step_compensates_nothing() -> None:
    """When nothing succeeded yet, a failure goes straight to compensated."""
    (
        order()
        .expect_command("create_order")
        .reply_failure("invalid order")
        .expect_no_command()
        .expect_status("compensated")
        .expect_compensations_in_order([])
    )


def test_compensations_receive_the_context() -> None:
    """A compensation carries the context, so it knows what to undo."""
    kit = (
        order()
        .expect_command("create_order").reply_success({"order_id": "o1"})
        .expect_command("reserve_stock").reply_failure("out of stock")
        .expect_compensation("create_order")
    )  # fmt: skip
    assert kit.last_command.payload["order_id"] == "o1"
    assert kit.last_command.message_id == "saga-1:create_order:compensation:1"


def test_experiment_notification_failure_undoes_everything_before_it() -> None:
    """create_experiment has no pivot: a failed notification compensates all three steps."""
    (
        SagaTest(CREATE_EXPERIMENT)
        .start({"user_id": "u1", "name": "e", "resources": 2})
        .expect_command("create_experiment").reply_success({"experiment_id": "e1"})
        .expect_command("allocate_resources").reply_success()
        .expect_command("initialize_metrics").reply_success()
        .expect_command("notify_user").reply_failure("no such user")
        .expect_compensation("initialize_metrics", action="cleanup").reply_success()
        .expect_compensation("allocate_resources", action="release").reply_success()
        .expect_compensation("create_experiment", action="delete").reply_success()
        .expect_status("compensated")
    )  # fmt: skip


def test_run_happy_path_completes() -> None:
    """create_run runs its four steps to completion."""
    kit = SagaTest(CREATE_RUN).start({"experiment_id": "e1", "config": {}, "resources": 1})
    for step in ("create_run", "reserve_resources", "initialize_metrics", "start_worker"):
        kit.expect_command(step).reply_success()
    kit.expect_status("completed")


# -- retries and timeouts ---------------------------------------------------------------------


def test_retry_reply_resends_after_the_backoff() -> None:
    """A `retry` reply re-sends the command, attempt + 1, once the backoff has elapsed."""
    (
        order()
        .expect_command("create_order")
        .reply_retry("database busy")
        .expect_event("step_retrying", step="create_order")
        .expect_no_command()
        .advance(FIRST_BACKOFF * 0.8)
        .expect_no_command()
        .advance(FIRST_BACKOFF * 0.2)
        .expect_command("create_order", attempt=2)
        .reply_success()
        .expect_command("reserve_stock", attempt=1)
    )


def test_zero_backoff_resends_at_once() -> None:
    """With no initial delay the next attempt goes out in the same decision."""
    instant = RetryPolicy(max_attempts=2, initial_delay=0.0)
    definition = dataclasses.replace(
        CREATE_ORDER,
        steps=(dataclasses.replace(CREATE_ORDER.steps[0], retry=instant), *CREATE_ORDER.steps[1:]),
    )
    SagaTest(definition).start(ORDER).expect_command("create_order").reply_retry().expect_command(
        "create_order", attempt=2
    )


def test_retries_exhausted_compensate() -> None:
    """When the attempts run out on `retry` replies the step failed and the saga compensates."""
    kit = order().expect_command("create_order").reply_success().expect_command("reserve_stock")
    for attempt in (2, 3):
        kit.reply_retry().advance(1).expect_command("reserve_stock", attempt=attempt)
    (
        kit.reply_retry("still busy")
        .expect_step("reserve_stock", "failed", attempts=3)
        .expect_error("gave up after 3 attempts: still busy")
        .expect_compensation("create_order")
    )


def test_step_timeout_resends_the_command() -> None:
    """A step that does not answer within its timeout is sent again after the backoff."""
    (
        order()
        .expect_command("create_order")
        .advance(TIMEOUT - 0.01)
        .expect_no_command()
        .advance(0.01)
        .expect_event("step_timed_out", step="create_order")
        .expect_no_command()
        .advance(FIRST_BACKOFF)
        .expect_command("create_order", attempt=2)
    )


def test_timeouts_exhausted_compensate_the_step_itself() -> None:
    """A step that never answered may have happened: it is compensated too, first."""
    kit = order().expect_command("create_order").reply_success().expect_command("reserve_stock")
    for attempt in (2, 3):
        kit.advance(TIMEOUT + 1).expect_command("reserve_stock", attempt=attempt)
    (
        kit.advance(TIMEOUT)
        .expect_step("reserve_stock", "compensating", attempts=3)
        .expect_compensation("reserve_stock", action="release_stock")
        .reply_success()
        .expect_compensation("create_order")
        .reply_success()
        .expect_status("compensated")
        .expect_step("reserve_stock", "compensated")
        .expect_error("reserve_stock timed out after 3 attempts")
    )


def test_timed_out_then_definite_answer_is_not_in_doubt() -> None:
    """If the attempt after a timeout answers `failure` the step did not happen: no compensation."""
    (
        order()
        .expect_command("create_order").reply_success()
        .expect_command("reserve_stock")
        .advance(TIMEOUT + 1)
        .expect_command("reserve_stock", attempt=2)
        .reply_failure("out of stock")
        .expect_compensation("create_order")
        .reply_success()
        .expect_status("compensated")
        .expect_compensations_in_order(["create_order"])
    )  # fmt: skip


def test_late_success_of_a_timed_out_attempt_is_stale() -> None:
    """Only the attempt in flight counts: attempt 1's late success is ignored once it timed out."""
    kit = order().expect_command("create_order")
    first = kit.last_command
    (
        kit.advance(TIMEOUT)
        .reply("success", to=first)
        .expect_ignored("stale_reply")
        .advance(FIRST_BACKOFF)
        .expect_command("create_order", attempt=2)
        .reply_success()
        .expect_command("reserve_stock")
    )


def test_duplicate_reply_changes_nothing() -> None:
    """The same reply delivered twice is applied once."""
    (
        order()
        .expect_command("create_order")
        .reply_success()
        .expect_command("reserve_stock")
        .redeliver_last_reply()
        .expect_ignored("duplicate_reply")
        .expect_no_command()
        .expect_step("reserve_stock", "running", attempts=1)
    )


def test_reply_for_another_step_is_stale() -> None:
    """A reply to a step the saga is not waiting for is ignored."""
    kit = order().expect_command("create_order")
    wrong = kit.last_command.model_copy(update={"step": "charge_payment"})
    kit.reply("success", to=wrong).expect_ignored("stale_reply").expect_step(
        "create_order", "running"
    )


def test_stale_timer_is_ignored() -> None:
    """A timeout for an attempt that already got its answer changes nothing."""
    kit = order().expect_command("create_order")
    assert kit.state is not None
    old_timer = kit.state.timers()[0]
    kit.reply_success().expect_command("reserve_stock")
    kit.given(old_timer).expect_ignored("stale_timeout").expect_no_command()


# -- compensation failures and the operator ---------------------------------------------------


def test_failing_compensation_is_retried_with_backoff() -> None:
    """A compensation that fails is tried again after its backoff until it succeeds."""
    (
        order()
        .expect_command("create_order").reply_success()
        .expect_command("reserve_stock").reply_failure()
        .expect_compensation("create_order").reply_failure("orders db down")
        .expect_event("compensation_retrying", step="create_order")
        .expect_no_command()
        .advance(FIRST_BACKOFF)
        .expect_compensation("create_order", attempt=2).reply_success()
        .expect_status("compensated")
    )  # fmt: skip


def test_compensation_out_of_attempts_fails_the_saga_until_an_operator_retries() -> None:
    """Past its attempts a compensation leaves the saga `failed`; a retry re-drives it."""
    kit = (
        order()
        .expect_command("create_order").reply_success()
        .expect_command("reserve_stock").reply_failure()
        .expect_compensation("create_order", attempt=1)
    )  # fmt: skip
    for attempt in range(2, 6):
        kit.reply_failure("orders db down").advance(2)
        kit.expect_compensation("create_order", attempt=attempt)
    (
        kit.reply_failure("orders db down")
        .expect_status("failed")
        .expect_error("compensation cancel_order of step create_order failed after 5 attempts")
        .expect_no_command()
        .advance(3600)
        .expect_no_command()
        .retry()
        .expect_event("saga_retried")
        .expect_status("compensating")
        .expect_compensation("create_order", attempt=6)
        .reply_failure()
        .advance(1)
        .expect_compensation("create_order", attempt=7)
        .reply_success()
        .expect_status("compensated")
    )


def test_compensation_timeouts_count_as_attempts() -> None:
    """A compensation that never answers is retried, then the saga is failed."""
    kit = order().expect_command("create_order").reply_success().expect_command("reserve_stock")
    kit.reply_failure().expect_compensation("create_order")
    for attempt in range(2, 6):
        kit.advance(TIMEOUT + 3).expect_compensation("create_order", attempt=attempt)
    kit.advance(TIMEOUT).expect_status("failed").expect_event("compensation_timed_out")


def test_retry_of_a_saga_that_is_not_failed_is_ignored() -> None:
    """Only a `failed` saga can be re-driven."""
    order().retry().expect_ignored("not_failed").expect_status("in_progress")


# -- abort ------------------------------------------------------------------------------------


def test_abort_compensates_including_the_step_in_flight() -> None:
    """An abort compensates what was done, and the running step whose outcome is unknown."""
    (
        order()
        .expect_command("create_order").reply_success()
        .expect_command("reserve_stock")
        .abort("customer changed their mind")
        .expect_event("saga_aborted")
        .expect_step("reserve_stock", "compensating")
        .expect_compensation("reserve_stock").reply_success()
        .expect_compensation("create_order").reply_success()
        .expect_status("compensated")
        .expect_error("aborted: customer changed their mind")
    )  # fmt: skip


def test_abort_while_waiting_to_retry_leaves_the_refused_step_alone() -> None:
    """A step that answered `retry` did not happen, so an abort during its backoff skips it."""
    (
        order()
        .expect_command("create_order").reply_success()
        .expect_command("reserve_stock").reply_retry()
        .abort()
        .expect_step("reserve_stock", "failed")
        .expect_compensation("create_order").reply_success()
        .expect_status("compensated")
        .expect_compensations_in_order(["create_order"])
    )  # fmt: skip


def test_abort_of_a_saga_not_in_progress_is_ignored() -> None:
    """Aborting a compensating or finished saga changes nothing."""
    kit = order().expect_command("create_order").reply_failure().expect_status("compensated")
    kit.abort().expect_ignored("not_running")
    compensating = (
        order().expect_command("create_order").reply_success().expect_command("reserve_stock")
    )
    compensating.reply_failure().abort().expect_ignored("not_running").expect_status("compensating")


# -- pivot ------------------------------------------------------------------------------------


def test_after_the_pivot_the_saga_only_goes_forward() -> None:
    """After the payment the confirmation is retried past max_attempts, whatever goes wrong."""
    kit = order_at_payment().reply_success().expect_command("send_confirmation")
    for attempt in range(2, 8):
        if attempt % 2:
            kit.reply_failure("mail server down")
        else:
            kit.advance_to_next_timer().expect_event("step_timed_out")
        kit.advance_to_next_timer().expect_command("send_confirmation", attempt=attempt)
    (
        kit.reply_success()
        .expect_status("completed")
        .expect_compensations_in_order([])
        .expect_step("send_confirmation", "succeeded", attempts=7)
    )


def test_abort_after_the_pivot_is_refused() -> None:
    """An operator cannot abort once the payment went through."""
    (
        order_at_payment()
        .reply_success()
        .abort()
        .expect_ignored("past_pivot")
        .expect_command("send_confirmation")
    )


def test_a_failed_pivot_does_not_refund() -> None:
    """A payment that failed took no money: only the earlier steps are compensated."""
    (
        order_at_payment()
        .reply_failure("card declined")
        .expect_compensation("reserve_stock").reply_success()
        .expect_compensation("create_order").reply_success()
        .expect_compensations_in_order(["reserve_stock", "create_order"])
    )  # fmt: skip


def test_a_timed_out_pivot_is_refunded() -> None:
    """A payment that never answered may have been charged, so it is refunded first."""
    kit = order_at_payment()
    for attempt in (2, 3):
        kit.advance(TIMEOUT + 1).expect_command("charge_payment", attempt=attempt)
    (
        kit.advance(TIMEOUT)
        .expect_compensation("charge_payment", action="refund").reply_success()
        .expect_compensation("reserve_stock").reply_success()
        .expect_compensation("create_order").reply_success()
        .expect_status("compensated")
    )  # fmt: skip


# -- deadline ---------------------------------------------------------------------------------


def short_deadline(deadline: float) -> SagaTest:
    return SagaTest(dataclasses.replace(CREATE_ORDER, deadline=deadline)).start(ORDER)


def test_deadline_before_the_pivot_compensates() -> None:
    """A saga still short of its pivot at the deadline compensates, the in-flight step included."""
    (
        short_deadline(5.0)
        .expect_command("create_order").reply_success()
        .expect_command("reserve_stock")
        .advance(TIMEOUT + FIRST_BACKOFF)
        .expect_command("reserve_stock", attempt=2)
        .advance(2.0)
        .expect_event("deadline_exceeded")
        .expect_error("deadline of 5s exceeded")
        .expect_compensation("reserve_stock").reply_success()
        .expect_compensation("create_order").reply_success()
        .expect_status("compensated")
    )  # fmt: skip


def test_deadline_after_the_pivot_is_ignored() -> None:
    """Once the payment succeeded the deadline no longer applies."""
    kit = short_deadline(1.0)
    assert kit.state is not None
    deadline = next(t for t in kit.state.timers() if t.timer == "deadline")
    kit.expect_command("create_order").reply_success().expect_command("reserve_stock")
    kit.reply_success().expect_command("charge_payment").reply_success()
    kit.given(deadline).expect_ignored("stale_timeout").expect_command("send_confirmation")


def test_custom_saga_with_a_step_that_cannot_be_undone() -> None:
    """A step without compensation before any pivot is skipped when rolling back."""
    log_only = Step(name="audit", participant="audit", action="log", compensation=None)
    definition = dataclasses.replace(
        CREATE_ORDER,
        name="audited_order",
        steps=(CREATE_ORDER.steps[0], log_only, CREATE_ORDER.steps[1]),
    )
    (
        SagaTest(definition).start(ORDER)
        .expect_command("create_order").reply_success()
        .expect_command("audit").reply_success()
        .expect_command("reserve_stock").reply_failure()
        .expect_compensation("create_order").reply_success()
        .expect_status("compensated")
        .expect_step("audit", "succeeded")
    )  # fmt: skip
