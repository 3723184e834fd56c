"""The chaos suite's ledger and checker, without a broker: they catch what they are meant to."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.chaos.check import (
    EventRecord,
    Fault,
    SagaObservation,
    check_saga,
    failover_time,
    figures,
    progress_times,
)
from benchmarks.chaos.ledger import Ledger, LedgerLine, LedgerParticipant, read_ledgers
from benchmarks.chaos.plan import DEFINITIONS, PlannedSaga, expect, make_plan
from benchmarks.chaos.run import ChaosReport
from participants.metrics import metrics
from participants.payments import payments
from saga_app.participant import Records
from topics import Command

ORDER_STEPS = ["create_order", "reserve_stock", "charge_payment", "send_confirmation"]
PARTICIPANT = dict(
    zip(ORDER_STEPS, ["orders", "inventory", "payments", "notifications"], strict=True)
)


def order(simulate: dict[str, str] | None = None) -> PlannedSaga:
    payload: dict[str, Any] = {"customer_id": "c", "items": [{"sku": "a", "qty": 1}], "amount": 5}
    if simulate:
        payload["simulate"] = simulate
    return PlannedSaga("s-1", "create_order", "test", payload)


class Script:
    """Ledger lines in the order they are added, as `read_ledgers` would number them."""

    def __init__(self) -> None:
        self.lines: list[LedgerLine] = []

    def add(
        self, step: str, kind: str = "command", attempt: int = 1, *, fresh: bool = True
    ) -> Script:
        return self._line(step, kind, attempt, applied=True, fresh=fresh)

    def refused(self, step: str, kind: str = "command", attempt: int = 1) -> Script:
        """A line whose handler did not apply anything (an imposed failure)."""
        return self._line(step, kind, attempt, applied=False, fresh=False)

    def _line(self, step: str, kind: str, attempt: int, *, applied: bool, fresh: bool) -> Script:
        message_id = f"s-1:{step}:{kind}:{attempt}"
        raw = {"writes": {"s-1": {"status": "x"}} if fresh else {}}
        self.lines.append(
            LedgerLine(
                order=len(self.lines),
                file="f",
                saga_id="s-1",
                participant=PARTICIPANT[step],
                step=step,
                kind=kind,
                message_id=message_id,
                attempt=attempt,
                ran=applied,
                applied=applied,
                fresh=fresh,
                answer="success" if applied else "failure",
                ts=float(len(self.lines)),
                raw=raw,
            )
        )
        return self


def view(status: str, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"status": status, "steps": [], "history": history or []}


def problems(planned: PlannedSaga, status: str, script: Script, **view_extra: Any) -> list[str]:
    obs = SagaObservation(planned, 0.0, {**view(status), **view_extra}, script.lines, [])
    return check_saga(obs).problems


def test_a_completed_saga_with_every_step_applied_once_is_consistent() -> None:
    """Every step applied, nothing compensated: no problem."""
    script = Script()
    for step in ORDER_STEPS:
        script.add(step)
    assert problems(order(), "completed", script) == []


def test_a_refund_for_a_charge_never_commanded_is_caught() -> None:
    """A compensation with no command of its step before it is an inconsistency."""
    script = Script().add("create_order").add("reserve_stock")
    script.add("charge_payment", "compensation").add("reserve_stock", "compensation")
    script.add("create_order", "compensation")
    found = problems(order(), "compensated", script)
    assert any("compensation of charge_payment without a command" in p for p in found), found


def test_compensations_out_of_reverse_order_are_caught() -> None:
    """Undoing an earlier step before a later one's undo was applied is an inconsistency."""
    script = Script().add("create_order").add("reserve_stock")
    script.add("create_order", "compensation").add("reserve_stock", "compensation")
    found = problems(order({"charge_payment": "fail"}), "compensated", script)
    assert any("compensation of create_order (#2) before that of reserve_stock" in p for p in found)


def test_a_compensation_sent_while_the_later_one_still_fails_is_caught() -> None:
    """One at a time: an earlier undo only after the later undo succeeded, not while it fails."""
    script = Script().add("create_order").add("reserve_stock")
    script.refused("reserve_stock", "compensation").add("create_order", "compensation")
    script.add("reserve_stock", "compensation", 2)
    found = problems(order(), "compensated", script)
    assert any("before that of reserve_stock was applied (only at #4)" in p for p in found), found


def test_a_step_applied_twice_is_a_duplicate_effect() -> None:
    """Two calls that each changed the participant's records for one step: applied twice."""
    script = Script().add("create_order").add("create_order", attempt=2)
    for step in ORDER_STEPS[1:]:
        script.add(step)
    obs = SagaObservation(order(), 0.0, view("completed"), script.lines, [])
    verdict = check_saga(obs)
    assert verdict.duplicate_effects == 1
    assert any("action of create_order applied 2 times" in p for p in verdict.problems)


def test_an_idempotent_repeat_is_not_a_duplicate_effect() -> None:
    """A second attempt that found the effect already made changed nothing: not applied twice."""
    script = Script().add("create_order").add("create_order", attempt=2, fresh=False)
    for step in ORDER_STEPS[1:]:
        script.add(step)
    obs = SagaObservation(order(), 0.0, view("completed"), script.lines, [])
    assert check_saga(obs).duplicate_effects == 0
    assert check_saga(obs).problems == []


def test_a_compensated_saga_must_undo_every_step_that_took_effect() -> None:
    """A step applied and never compensated in a compensated saga is an inconsistency."""
    script = Script().add("create_order").add("reserve_stock").refused("charge_payment")
    script.add("create_order", "compensation")
    found = problems(order({"charge_payment": "fail"}), "compensated", script)
    assert found == [
        "compensated, but reserve_stock took effect and was never compensated: "
        + script.lines[1].brief()
    ]


def test_a_compensated_saga_must_not_have_gone_past_its_pivot() -> None:
    """A command after the pivot, or a pivot that succeeded, contradicts a compensated order."""
    script = Script().add("create_order").add("reserve_stock").add("charge_payment")
    script.add("send_confirmation").add("charge_payment", "compensation")
    script.add("reserve_stock", "compensation").add("create_order", "compensation")
    history = [{"event": "step_succeeded", "step": "charge_payment"}]
    found = problems(order(), "compensated", script, history=history)
    assert any("send_confirmation after the pivot was commanded" in p for p in found), found
    assert any("the pivot charge_payment succeeded" in p for p in found), found


def test_a_completed_saga_must_have_no_compensation() -> None:
    """Completed means every step done and nothing undone."""
    script = Script()
    for step in ORDER_STEPS:
        script.add(step)
    script.add("create_order", "compensation")
    found = problems(order(), "completed", script)
    assert any("completed, but create_order got a compensation" in p for p in found), found


def test_an_effect_reapplied_after_its_compensation_is_caught() -> None:
    """A late command that changes the records again after the undo leaves the effect in place."""
    script = Script().add("create_order").add("reserve_stock")
    script.add("reserve_stock", "compensation").add("reserve_stock", attempt=2)
    script.add("create_order", "compensation")
    found = problems(order({"charge_payment": "fail"}), "compensated", script)
    assert any("reserve_stock applied again after its compensation" in p for p in found), found


def test_two_different_final_statuses_on_saga_events_are_an_inconsistency() -> None:
    """A saga announced completed and later compensated contradicted itself."""
    script = Script()
    for step in ORDER_STEPS:
        script.add(step)
    events = [
        EventRecord(0, 7, 1.0, {"saga_id": "s-1", "seq": 9, "status": "completed"}),
        EventRecord(0, 9, 2.0, {"saga_id": "s-1", "seq": 12, "status": "compensated"}),
    ]
    obs = SagaObservation(order(), 0.0, view("completed"), script.lines, events)
    verdict = check_saga(obs)
    assert verdict.view_disagrees_with_events
    assert any("announced it completed and later compensated" in p for p in verdict.problems)


def test_a_final_status_saga_events_never_announced_is_a_disagreement() -> None:
    """The table says completed, but the final transition never reached `saga.events`."""
    script = Script()
    for step in ORDER_STEPS:
        script.add(step)
    started = EventRecord(0, 3, 1.0, {"saga_id": "s-1", "seq": 1, "status": "in_progress"})
    obs = SagaObservation(order(), 0.0, view("completed"), script.lines, [started])
    assert check_saga(obs).view_disagrees_with_events


@pytest.mark.parametrize(
    ("simulate", "status", "commands", "compensations"),
    [
        ({}, "completed", [1, 1, 1, 1], {}),
        ({"reserve_stock": "flaky:2"}, "completed", [1, 3, 1, 1], {}),
        ({"send_confirmation": "flaky:4"}, "completed", [1, 1, 1, 5], {}),
        ({"reserve_stock": "flaky:3"}, "compensated", [1, 3], {"create_order": 1}),
        (
            {"charge_payment": "timeout"},
            "compensated",
            [1, 1, 3],
            {"charge_payment": 1, "reserve_stock": 1, "create_order": 1},
        ),
        (
            {"charge_payment": "fail", "create_order": "fail_compensation:2"},
            "compensated",
            [1, 1, 1],
            {"reserve_stock": 1, "create_order": 3},
        ),
        (
            {"reserve_stock": "fail", "create_order": "fail_compensation:5"},
            "failed",
            [1, 1],
            {"create_order": 5},
        ),
    ],
)
def test_the_plan_knows_what_each_saga_does_without_faults(
    simulate: dict[str, str], status: str, commands: list[int], compensations: dict[str, int]
) -> None:
    """The expected status and attempts follow the engine's rules for the `simulate` hooks."""
    expectation = expect(DEFINITIONS["create_order"], simulate)
    assert expectation.status == status
    assert list(expectation.command_attempts.values()) == commands
    assert expectation.compensation_attempts == compensations


def test_the_plan_mixes_all_types_and_never_asks_for_a_saga_that_cannot_end() -> None:
    """Every planned saga has an expectation (no failure after a pivot) and all types appear."""
    plan = make_plan(600, "r", seed=3)
    assert {p.saga_type for p in plan} == set(DEFINITIONS)
    statuses = {p.expect().status for p in plan}
    assert statuses == {"completed", "compensated"}


def event(partition: int, offset: int, ts: float, saga: str, seq: int) -> EventRecord:
    return EventRecord(partition, offset, ts, {"saga_id": saga, "seq": seq, "status": "x"})


def test_failover_is_the_time_until_every_partition_of_the_killed_worker_moves_again() -> None:
    """Replayed transitions are not progress; the slowest partition sets the failover time."""
    events = [
        event(0, 0, 1.0, "a", 1),
        event(0, 1, 12.0, "a", 1),  # a replay of seq 1 after the kill: not progress
        event(0, 2, 14.0, "a", 2),
        event(1, 0, 11.0, "b", 1),
        event(2, 0, 10.5, "c", 1),
    ]
    progress = progress_times(events)
    assert failover_time(Fault("worker_restart", "w", 10.0, [0, 1]), progress) == 4.0
    assert failover_time(Fault("worker_restart", "w", 10.0, [0, 3]), progress) is None
    assert failover_time(Fault("worker_restart", "w", 10.0, []), progress) is None


def test_duplicate_deliveries_count_topic_copies_and_handler_reruns() -> None:
    """A message twice in a command topic, or handled twice, is one duplicate delivery."""
    script = Script().add("create_order").add("create_order", fresh=False)
    verdict = check_saga(SagaObservation(order(), 0.0, view("in_progress"), script.lines, []))
    result = figures([verdict], {"s-1:create_order:command:1": 2, "m2": 3}, script.lines, [], [])
    assert result.duplicate_deliveries == 1 + 2
    assert (result.resent_copies, result.handler_reruns, result.lost) == (3, 1, 1)


def test_the_report_names_the_sagas_that_rolled_back_though_asked_to_complete() -> None:
    """A spurious rollback is counted and named (to trace it in the logs); a rollback the
    payload asked for is neither."""
    happy = check_saga(SagaObservation(order(), 0.0, view("compensated"), [], []))
    asked = dataclasses.replace(order({"charge_payment": "fail"}), saga_id="s-2")
    failed = check_saga(SagaObservation(asked, 0.0, view("compensated"), [], []))
    verdicts = [happy, failed]
    report = ChaosReport(figures(verdicts, {}, [], [], []), verdicts, [], Path("."), 0.0, [], {})

    assert report.figures.spurious_rollbacks == 1
    assert [r["saga_id"] for r in report.rolled_back_spuriously()] == [happy.saga_id]
    assert report.rolled_back_spuriously()[0]["status"] == "compensated"


# --------------------------------------------------------------------------- the ledger


def command(step: str, action: str, kind: str = "command", attempt: int = 1, **sim: str) -> Command:
    payload: dict[str, Any] = {"customer_id": "c-ledger", "amount": 5.0}
    if sim:
        payload["simulate"] = sim
    return Command(
        message_id=f"s-9:{step}:{kind}:{attempt}",
        saga_id="s-9",
        saga_type="create_order",
        step=step,
        kind=kind,  # type: ignore[arg-type]
        action=action,
        attempt=attempt,
        payload=payload,
        reply_to="saga.replies",
    )


def test_the_ledger_records_what_each_call_did(tmp_path: Path) -> None:
    """Imposed answers did not run; a fresh charge, an idempotent repeat, a silent timeout."""
    ledger = Ledger(tmp_path)
    wrapped = LedgerParticipant(payments, ledger)
    records = Records({}, "payments")
    step = "charge_payment"
    assert wrapped.handle(command(step, "charge", **{step: "fail"}), records, simulate=True)
    wrapped.handle(command(step, "charge", attempt=2), records, simulate=True)
    wrapped.handle(command(step, "charge", attempt=3), records, simulate=True)
    silent = command(step, "charge", attempt=4, **{step: "timeout"})
    assert wrapped.handle(silent, records, simulate=True) is None
    wrapped.handle(command(step, "refund", "compensation"), records, simulate=True)
    lines = read_ledgers(tmp_path).lines
    seen = [(line.attempt, line.kind, line.ran, line.applied, line.fresh) for line in lines]
    assert seen == [
        (1, "command", False, False, False),
        (2, "command", True, True, True),
        (3, "command", True, True, False),
        (4, "command", True, True, False),
        (1, "compensation", True, True, True),
    ]
    assert lines[3].answer == "silent"
    assert lines[4].raw["writes"]["s-9"]["status"] == "refunded"


def test_writing_back_the_same_record_is_not_a_fresh_effect(tmp_path: Path) -> None:
    """`metrics.cleanup` rewrites its record on every call: only the first call changes it."""
    wrapped = LedgerParticipant(metrics, Ledger(tmp_path))
    records = Records({}, "metrics")
    wrapped.handle(command("initialize_metrics", "initialize"), records)
    for attempt in (1, 2):
        wrapped.handle(command("initialize_metrics", "cleanup", "compensation", attempt), records)
    assert [line.fresh for line in read_ledgers(tmp_path).lines] == [True, True, False]


def test_each_process_start_gets_its_own_ledger_file_in_start_order(tmp_path: Path) -> None:
    """Lines of a later start come after those of an earlier one; a file is one JSON per line."""
    for run in range(2):
        Ledger(tmp_path).write({"saga_id": f"s-{run}", "step": "x"})
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) == 2
    assert [json.loads(f.read_text())["saga_id"] for f in files] == ["s-0", "s-1"]
