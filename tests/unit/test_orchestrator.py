"""The orchestrator's driver without Kafka: a dict for the table, a list for the producer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from saga_app.listing import SagaListing, merge_stats
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator
from saga_app.participant import Result, failure, reply_to, success
from saga_app.record import Record
from saga_app.registry import EXAMPLES, load_sagas
from saga_app.state import SagaState
from topics import Command, TopicCatalog

CATALOG = TopicCatalog(prefix="t.", partitions=4)
SAGAS = load_sagas([EXAMPLES])
ORDER = {"customer_id": "c1", "items": [{"sku": "a", "qty": 1}], "amount": 5}


class DictStore:
    def __init__(self) -> None:
        self.states: dict[str, SagaState] = {}
        self.deleted: list[str] = []
        """Every delete, in order, even of a saga already gone (the table writes a tombstone)."""

    def get(self, saga_id: str) -> SagaState | None:
        return self.states.get(saga_id)

    def put(self, state: SagaState) -> None:
        self.states[state.saga_id] = state

    def delete(self, saga_id: str) -> None:
        self.states.pop(saga_id, None)
        self.deleted.append(saga_id)


class ListPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, json.loads(value)))

    publish = send

    def to(self, topic: str) -> list[dict[str, Any]]:
        return [value for t, _, value in self.sent if t == topic]


RECORDED_AT = 1000.0
"""When the test records were produced; the worker's clock stands there too unless a test
says otherwise: it reads them as they come."""


def make(
    clock: Callable[[], float] = lambda: RECORDED_AT,
) -> tuple[Orchestrator, DictStore, ListPublisher]:
    store, publisher = DictStore(), ListPublisher()
    metrics = SagaMetrics(CollectorRegistry())
    orchestrator = Orchestrator(CATALOG, SAGAS, store, publisher, metrics, clock=clock)
    return orchestrator, store, publisher


def record(value: Any, key: str | None, topic: str = CATALOG.requests, offset: int = 0) -> Record:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Record(topic, 0, offset, None if key is None else key.encode(), raw, RECORDED_AT)


def start(saga_id: str | None = "s1", saga_type: str = "create_order") -> dict[str, Any]:
    body: dict[str, Any] = {"type": "start", "saga_type": saga_type, "payload": ORDER}
    if saga_id is not None:
        body["saga_id"] = saga_id
    return body


async def test_start_sends_the_first_command_and_stores_the_saga() -> None:
    """A start publishes the first step's command and a saga event, then stores the state."""
    orchestrator, store, publisher = make()
    await orchestrator.handle(record(start(), "s1"))
    [command] = publisher.to("t.orders.commands")
    assert command["message_id"] == "s1:create_order:command:1"
    assert command["reply_to"] == "t.saga.replies"
    assert publisher.to("t.saga.events")[0]["event"] == "saga_started"
    assert store.states["s1"].status == "in_progress"
    assert len(orchestrator.deadlines) >= 1
    assert orchestrator.listing.query()[0]["step"] == "create_order"


async def test_replaying_a_record_on_the_old_state_sends_the_same_messages() -> None:
    """A record applied again after a crash (state not stored) reproduces every message."""
    first, _, sent_first = make()
    again, _, sent_again = make()
    await first.handle(record(start(), "s1"))
    await again.handle(record(start(), "s1"))
    assert sent_first.sent == sent_again.sent


async def test_a_replayed_record_already_applied_resends_the_outstanding_command() -> None:
    """After a crash before the producer flushed, the replay re-sends what the saga awaits."""
    orchestrator, store, publisher = make()
    await orchestrator.handle(record(start(), "s1"))
    [sent_before_crash] = publisher.to("t.orders.commands")
    again = ListPublisher()
    restarted = Orchestrator(CATALOG, SAGAS, store, again, SagaMetrics(CollectorRegistry()))
    await restarted.handle(record(start(), "s1"))  # the state survived, the command may not have
    assert again.to("t.orders.commands") == [sent_before_crash]
    assert again.to("t.saga.events") == publisher.to("t.saga.events")[-1:], "the event may not have"


class CountingStore(DictStore):
    def __init__(self, states: dict[str, SagaState]) -> None:
        super().__init__()
        self.states = dict(states)
        self.puts = 0

    def put(self, state: SagaState) -> None:
        self.puts += 1
        super().put(state)


async def test_a_replayed_record_the_engine_ignores_resends_and_stores_the_state_again() -> None:
    """A timeout applied before a crash, read again after it: the engine ignores it as stale,
    yet the saga's outstanding command (the retry it caused) goes out again under the same
    message id and the state is written again, for a changelog record the crash may have lost."""
    orchestrator, store, publisher = make()
    await orchestrator.handle(record(start(), "s1"))
    late = None
    for _ in ("the step times out", "its backoff runs out"):
        publisher.sent.clear()
        now = orchestrator.deadlines.next_due()
        assert now is not None
        await orchestrator.sweep(now, owns=lambda p: True)
        [timer] = publisher.to(CATALOG.requests)
        late = Record(CATALOG.requests, 0, 1, b"s1", json.dumps(timer).encode(), now)
        await orchestrator.handle(late)
    assert late is not None
    [retry] = publisher.to("t.orders.commands")
    assert retry["attempt"] == 2

    again, restored = ListPublisher(), CountingStore(store.states)
    metrics = SagaMetrics(CollectorRegistry())
    restarted = Orchestrator(CATALOG, SAGAS, restored, again, metrics, clock=lambda: 5000.0)
    await restarted.handle(late)
    assert again.to("t.orders.commands") == [retry]
    assert restored.puts == 1 and restored.states["s1"] == store.states["s1"]
    # the re-sent attempt gets its whole timeout from now, though its timer is long overdue
    timeout = SAGAS.newest("create_order").step("create_order").timeout
    assert restarted.deadlines.next_due() == 5000.0 + timeout
    assert restarted.deadlines.pop_due(5000.0 + timeout - 0.01) == []
    held = restarted.deadlines.pop_due(5000.0 + timeout)
    step_timer = next(t for t in held if t.timer == "step")
    assert step_timer.due_at < 5000.0  # what the engine will see is unchanged


def test_forgetting_revoked_partitions_drops_what_was_read_there() -> None:
    orchestrator, _, _ = make()
    orchestrator.processed = {("t.saga.requests", 0): (5, 1.0), ("t.saga.replies", 1): (7, 2.0)}
    orchestrator.forget_partitions([0])
    assert orchestrator.processed == {("t.saga.replies", 1): (7, 2.0)}


async def test_a_duplicate_produced_after_the_takeover_is_not_answered_with_a_resend() -> None:
    """Duplicates newer than the partition's takeover are participants' re-sends: ignored."""
    orchestrator, _, publisher = make()
    await orchestrator.handle(record(start(), "s1"))
    orchestrator.owned_since = {0: 999.0}  # the record (at 1000.0) came after the takeover
    publisher.sent.clear()
    await orchestrator.handle(record(start(), "s1"))
    assert publisher.sent == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid request"),
        (b"", "empty message"),
        ({"type": "start", "saga_id": "s1"}, "saga_type"),
        (
            start(saga_type="no_such"),
            "known types: create_experiment, create_experiment_choreo, create_order, create_run",
        ),
        ({"type": "abort", "saga_id": "ghost", "reason": "x"}, "unknown saga 'ghost'"),
        (b"x" * 300_000, "over the"),
    ],
)
async def test_bad_records_are_dead_lettered_with_the_reason(value: Any, reason: str) -> None:
    """Unreadable, invalid, unknown-type, unknown-saga and oversized records go to the DLQ."""
    orchestrator, store, publisher = make()
    key = value.get("saga_id", "s1") if isinstance(value, dict) else "s1"
    await orchestrator.handle(record(value, key))
    [letter] = publisher.to("t.saga.dlq")
    assert reason in letter["error"]
    assert letter["topic"] == "t.saga.requests"
    assert store.states == {}


async def test_a_reply_for_no_saga_is_dead_lettered() -> None:
    """A reply whose saga does not exist is parked with a reason, not dropped silently."""
    orchestrator, _, publisher = make()
    reply = {
        "message_id": "m",
        "in_reply_to": "c",
        "saga_id": "ghost",
        "step": "create_order",
        "kind": "command",
        "attempt": 1,
        "outcome": "success",
    }
    await orchestrator.handle(record(reply, "ghost", topic=CATALOG.replies))
    [letter] = publisher.to("t.saga.dlq")
    assert "unknown saga 'ghost'" in letter["error"]


async def test_start_without_id_is_republished_under_an_id_derived_from_the_record() -> None:
    """A start with no saga_id gets one from its offset, so a replay picks the same one."""
    orchestrator, store, publisher = make()
    await orchestrator.handle(record(start(saga_id=None), None, offset=7))
    await orchestrator.handle(record(start(saga_id=None), None, offset=7))
    [first, second] = publisher.to("t.saga.requests")
    assert first == second and first["saga_id"]
    assert publisher.sent[0][1] == first["saga_id"].encode()
    assert store.states == {}


async def test_record_under_the_wrong_key_is_moved_to_its_saga_partition() -> None:
    """A request keyed by something else is re-published keyed by its saga_id, not applied."""
    orchestrator, store, publisher = make()
    await orchestrator.handle(record(start("s9"), "other-key"))
    [(topic, key, value)] = publisher.sent
    assert (topic, key, value["saga_id"]) == ("t.saga.requests", b"s9", "s9")
    assert store.states == {}


async def test_log_lines_about_a_saga_carry_its_fields() -> None:
    """Every transition is logged with saga_id, saga_type, step and attempt."""
    orchestrator, _, _ = make()
    with capture_logs() as logs:
        await orchestrator.handle(record(start(), "s1"))
    step_started = [line for line in logs if line["event"] == "step_started"]
    assert step_started, logs
    assert {k: step_started[0][k] for k in ("saga_id", "saga_type", "step", "attempt")} == {
        "saga_id": "s1",
        "saga_type": "create_order",
        "step": "create_order",
        "attempt": 1,
    }


async def _run_to_the_end(
    orchestrator: Orchestrator, publisher: ListPublisher, answer: Callable[[Command], Result]
) -> None:
    """Answer every command the orchestrator sends until it sends none."""
    answered = 0
    while len(commands := [v for t, _, v in publisher.sent if t.endswith(".commands")]) > answered:
        command = Command.model_validate(commands[answered])
        answered += 1
        raw = reply_to(command, answer(command)).model_dump_json().encode()
        await orchestrator.handle(record(raw, command.saga_id, CATALOG.replies, answered))


async def test_a_saga_that_goes_to_plan_logs_its_start_and_end_and_its_steps_at_debug() -> None:
    orchestrator, store, publisher = make()
    with capture_logs() as logs:
        await orchestrator.handle(record(start("s1"), "s1"))
        await _run_to_the_end(orchestrator, publisher, lambda command: success())
    assert store.states["s1"].status == "completed"
    info = [line["events"] for line in logs if line["log_level"] == "info"]
    assert info == [["saga_started", "step_started"], ["step_succeeded", "saga_completed"]]
    steps = [line["events"] for line in logs if line["log_level"] == "debug"]
    assert steps == [["step_succeeded", "step_started"]] * 3


async def test_what_does_not_go_to_plan_is_logged_at_info() -> None:
    orchestrator, store, publisher = make()

    def answer(command: Command) -> Result:
        return failure("card declined") if command.step == "charge_payment" else success()

    with capture_logs() as logs:
        await orchestrator.handle(record(start("s1"), "s1"))
        await _run_to_the_end(orchestrator, publisher, answer)
    assert store.states["s1"].status == "compensated"
    info = [line["events"] for line in logs if line["log_level"] == "info"]
    assert info == [
        ["saga_started", "step_started"],
        ["step_failed", "compensation_started"],
        ["compensation_succeeded", "compensation_started"],
        ["compensation_succeeded", "saga_compensated"],
    ]


async def test_sweep_sends_due_timeouts_of_owned_partitions_only() -> None:
    """Timeouts fall due after the step timeout, and only for sagas on owned partitions."""
    orchestrator, _, publisher = make()
    await orchestrator.handle(record(start("s1"), "s1"))
    publisher.sent.clear()
    owner = CATALOG.partition_of("s1")
    assert await orchestrator.sweep(1000.0 + 1, owns=lambda p: True) == 0
    assert await orchestrator.sweep(1000.0 + 60, owns=lambda p: p != owner) == 0
    orchestrator.rebuild_indexes([], [], now=0.0)
    assert len(orchestrator.deadlines) == 0


async def test_a_command_sent_late_gets_its_whole_timeout_after_it_leaves() -> None:
    """A start read 2 s after it was produced (a backlog in this worker): its first command
    leaves then, and its step may time out only its whole timeout later, though the stored
    timer, what the engine sees, still counts from the start."""
    orchestrator, store, publisher = make(clock=lambda: RECORDED_AT + 2.0)
    await orchestrator.handle(record(start("s1"), "s1"))
    timeout = SAGAS.newest("create_order").step("create_order").timeout
    timer = store.states["s1"].timer
    assert timer is not None and timer.due_at == RECORDED_AT + timeout
    publisher.sent.clear()
    assert await orchestrator.sweep(RECORDED_AT + timeout + 1.99, owns=lambda p: True) == 0
    assert await orchestrator.sweep(RECORDED_AT + timeout + 2.0, owns=lambda p: True) == 1
    [due] = publisher.to(CATALOG.requests)
    assert (due["timer"], due["due_at"]) == ("step", RECORDED_AT + timeout)


async def test_a_takeover_keeps_the_hold_of_a_command_sent_late() -> None:
    """A record processed after the assignment but before the takeover indexed the stored sagas:
    re-read from the store, the saga keeps its timers held back (two throttled workers settling
    their partitions during a burst: 61 steps timed out, 1.8 s after their commands left)."""
    orchestrator, store, _ = make(clock=lambda: RECORDED_AT + 2.0)
    await orchestrator.handle(record(start("s1"), "s1"))
    orchestrator.rebuild_indexes(list(store.states.values()), [0, 1, 2, 3], now=RECORDED_AT + 2.0)
    timeout = SAGAS.newest("create_order").step("create_order").timeout
    assert orchestrator.deadlines.pop_due(RECORDED_AT + timeout + 1.99) == []
    [due] = orchestrator.deadlines.pop_due(RECORDED_AT + timeout + 2.0)
    assert due.timer == "step"


async def test_sweep_sends_a_timeout_keyed_by_saga() -> None:
    """A step that outlives its timeout gets a timeout request on its saga's partition."""
    orchestrator, _, publisher = make()
    await orchestrator.handle(record(start("s1"), "s1"))
    publisher.sent.clear()
    assert await orchestrator.sweep(1000.0 + 10, owns=lambda p: True) == 1
    [(topic, key, timeout)] = publisher.sent
    assert (topic, key, timeout["type"], timeout["step"]) == (
        "t.saga.requests",
        b"s1",
        "timeout",
        "create_order",
    )


def summary(saga_id: str, created: float, status: str = "completed", kind: str = "a") -> Any:
    return {"saga_id": saga_id, "saga_type": kind, "status": status, "created_at": created}


def test_listing_is_newest_first_filtered_and_limited() -> None:
    """The list is newest first, filters by status and type, and stops at the limit."""
    listing = SagaListing()
    listing._summaries = {
        s["saga_id"]: s
        for s in [summary("x", 1), summary("y", 3, "failed"), summary("z", 2, kind="b")]
    }
    assert [s["saga_id"] for s in listing.query()] == ["y", "z", "x"]
    assert [s["saga_id"] for s in listing.query(status="completed")] == ["z", "x"]
    assert [s["saga_id"] for s in listing.query(saga_type="b")] == ["z"]
    assert [s["saga_id"] for s in listing.query(limit=1)] == ["y"]
    assert listing.stats()["by_type"] == {"a": {"completed": 1, "failed": 1}, "b": {"completed": 1}}


def test_stats_of_workers_add_up() -> None:
    """Merging two workers' counts adds them per status and per type."""
    one = {"by_status": {}, "by_type": {"a": {"completed": 2}}, "total": 2}
    two = {"by_status": {}, "by_type": {"a": {"completed": 1, "failed": 1}}, "total": 2}
    merged = merge_stats([one, two])
    assert merged == {
        "by_status": {"completed": 3, "failed": 1},
        "by_type": {"a": {"completed": 3, "failed": 1}},
        "total": 4,
    }
