"""The test kit itself: failures say what happened, and time is skipped, never slept."""

from __future__ import annotations

import pytest

from saga_app.sagas import CREATE_ORDER
from saga_app.testing import SagaTest


def kit() -> SagaTest:
    return SagaTest(CREATE_ORDER).start({"amount": 1})


def test_wrong_command_names_what_was_sent() -> None:
    """Expecting the wrong step says which message came instead, and shows the history."""
    with pytest.raises(AssertionError) as raised:
        kit().expect_command("reserve_stock")
    message = str(raised.value)
    assert "expected command of step 'reserve_stock'" in message
    assert "command of step 'create_order' (action 'create_order', attempt 1)" in message
    assert "step_started create_order#1" in message


def test_expecting_more_than_was_sent_fails() -> None:
    """Asking for a command that was never sent fails with 'nothing more was sent'."""
    with pytest.raises(AssertionError, match="nothing more was sent"):
        kit().expect_command("create_order").expect_command("reserve_stock")


def test_expect_no_command_lists_the_unread_ones() -> None:
    """expect_no_command fails naming each command nobody expected."""
    with pytest.raises(AssertionError, match="1 unread: command of step 'create_order'"):
        kit().expect_no_command()


def test_wrong_status_and_wrong_compensations_are_explained() -> None:
    """Status and compensation-order mismatches print what was expected and what happened."""
    with pytest.raises(AssertionError, match="expected saga status 'completed', got 'in_progress'"):
        kit().expect_status("completed")
    compensated = (
        kit().expect_command("create_order").reply_success().expect_command("reserve_stock")
    )
    compensated.reply_failure().expect_compensation("create_order").reply_success()
    with pytest.raises(AssertionError, match=r"in order \['x'\], but sent \['create_order'\]"):
        compensated.expect_compensations_in_order(["x"])


def test_a_reply_the_engine_ignores_fails_fast() -> None:
    """reply_success to a command that is no longer awaited fails right there, not later."""
    timed_out = kit().expect_command("create_order").advance(3.0)
    with pytest.raises(AssertionError, match="ignored as 'stale_reply'"):
        timed_out.reply_success()


def test_advance_fires_timers_in_order_at_their_due_time() -> None:
    """Skipping 10 s fires the timeout at 3 s and the resend after it, each at its own time."""
    skipped = kit().expect_command("create_order").advance(10.0)
    assert skipped.now == 10.0
    timed_out = [e for e in skipped.events if e.event == "step_timed_out"]
    assert [e.at for e in timed_out][:1] == [3.0]
    assert [e.attempt for e in timed_out] == [1, 2, 3][: len(timed_out)]


def test_payload_expectations_check_items() -> None:
    """A payload expectation fails naming the item that differs."""
    with pytest.raises(AssertionError, match=r"payload\['amount'\] was 1"):
        kit().expect_command("create_order", payload={"amount": 2})
