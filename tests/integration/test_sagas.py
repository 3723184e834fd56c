"""Sagas end to end on the real broker: a worker and the participants as real processes, driven
through `saga.requests` and observed through the web view and the topics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from services import http_json

from saga_app.registry import EXAMPLES
from tests.integration.saga_system import (
    HELD,
    Deadline,
    SagaSystem,
    assert_compensated_by_abort,
    eventually,
)


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaSystem]:
    workdir: Path = tmp_path_factory.mktemp("sagas")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    running = SagaSystem(kafka_bootstrap, workdir, prefix, sagas=[EXAMPLES, HELD]).start()
    running.warm_up()  # the tests count attempts: not while the groups may still settle
    yield running
    running.stop()


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def order(simulate: dict[str, str] | None = None, qty: int = 1, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "customer_id": new_id("customer"),
        "items": [{"sku": new_id("sku"), "qty": qty}],
        "amount": 25.0,
        **extra,
    }
    if simulate:
        payload["simulate"] = simulate
    return payload


def events(saga: dict[str, Any], *names: str) -> list[tuple[str, str | None]]:
    """The (event, step) pairs of the saga's history whose event is one of `names`."""
    return [(h["event"], h["step"]) for h in saga["history"] if h["event"] in names]


def step(saga: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in saga["steps"] if s["name"] == name)


PAYLOADS = {
    "create_order": order(),
    "create_experiment": {"user_id": "u1", "name": "exp", "resources": {"gpus": 2}},
    "create_run": {"experiment_id": "e1", "config": {"lr": 0.1}, "resources": 2},
}


@pytest.mark.parametrize("saga_type", sorted(PAYLOADS))
def test_each_example_saga_completes(system: SagaSystem, saga_type: str) -> None:
    """Each example saga runs every step once and completes, with step data merged into context."""
    saga_id = system.start_saga(saga_type, PAYLOADS[saga_type], new_id(saga_type))
    saga = system.wait_for(saga_id)
    assert saga["status"] == "completed", saga
    assert all(s["status"] == "succeeded" and s["attempts"] == 1 for s in saga["steps"])
    assert events(saga, "compensation_started") == []
    if saga_type == "create_order":
        assert saga["context"]["order_id"] == saga_id
        assert saga["context"]["payment_id"] == saga_id


@pytest.mark.parametrize(
    ("failing", "compensated"),
    [
        ("create_order", []),
        ("reserve_stock", ["create_order"]),
        ("charge_payment", ["reserve_stock", "create_order"]),
    ],
)
def test_failure_compensates_done_steps_in_reverse(
    system: SagaSystem, failing: str, compensated: list[str]
) -> None:
    """A failure at a step compensates exactly the steps done before it, last first."""
    saga_id = system.start_saga("create_order", order({failing: "fail"}), new_id("fail"))
    saga = system.wait_for(saga_id)
    assert saga["status"] == "compensated", saga
    assert [s for _, s in events(saga, "compensation_succeeded")] == compensated
    assert step(saga, failing)["status"] == "failed"
    assert "simulated failure" in (step(saga, failing)["error"] or "")


def test_credit_limit_is_a_real_domain_failure(system: SagaSystem) -> None:
    """A charge over the customer's credit limit fails the pivot and rolls the order back."""
    saga_id = system.start_saga("create_order", order(amount=5000.0), new_id("credit"))
    saga = system.wait_for(saga_id)
    assert saga["status"] == "compensated"
    assert "credit limit exceeded" in (step(saga, "charge_payment")["error"] or "")


def test_step_that_never_answers_is_retried_then_its_effect_compensated(
    system: SagaSystem, deadline: Deadline
) -> None:
    """A silent step times out on every attempt; its possibly-done effect is compensated too."""
    sku = new_id("sku")
    payload = order({"reserve_stock": "timeout"}, qty=STOCK)
    payload["items"][0]["sku"] = sku
    saga_id = system.start_saga("create_order", payload, new_id("silent"))
    saga = system.wait_for(saga_id, timeout=deadline.left("3 timeouts, then compensated"))
    assert saga["status"] == "compensated", saga
    assert step(saga, "reserve_stock")["attempts"] == 3
    assert [e for e, s in events(saga, "step_timed_out")] == ["step_timed_out"] * 3
    assert [s for _, s in events(saga, "compensation_succeeded")] == [
        "reserve_stock",
        "create_order",
    ]
    # The silent attempts did reserve the whole stock; only its release lets this order through.
    assert order_of(system, sku, STOCK, deadline.left("the probe"))["status"] == "completed"


@pytest.mark.parametrize("retries", [1, 2])
def test_flaky_step_completes_after_its_retries(system: SagaSystem, retries: int) -> None:
    """A step answering `retry` N times is re-sent with backoff and succeeds on attempt N+1."""
    saga_id = system.start_saga(
        "create_order", order({"charge_payment": f"flaky:{retries}"}), new_id("flaky")
    )
    saga = system.wait_for(saga_id)
    assert saga["status"] == "completed", saga
    assert step(saga, "charge_payment")["attempts"] == retries + 1


def test_failing_compensation_is_retried_until_it_succeeds(system: SagaSystem) -> None:
    """A compensation failing N times succeeds on attempt N+1 and the saga is compensated."""
    simulate = {"charge_payment": "fail", "reserve_stock": "fail_compensation:2"}
    saga_id = system.start_saga("create_order", order(simulate), new_id("comp"))
    saga = system.wait_for(saga_id)
    assert saga["status"] == "compensated", saga
    assert step(saga, "reserve_stock")["compensation_attempts"] == 3


def test_compensation_that_never_succeeds_fails_and_retry_redrives_it(
    system: SagaSystem, deadline: Deadline
) -> None:
    """Past its attempts a compensation leaves the saga `failed`; an operator retry finishes it."""
    simulate = {"charge_payment": "fail", "reserve_stock": "fail_compensation:5"}
    saga_id = system.start_saga("create_order", order(simulate), new_id("stuck"))
    saga = system.wait_for(saga_id, timeout=deadline.left("failed"))
    assert saga["status"] == "failed", saga
    assert step(saga, "reserve_stock")["compensation_attempts"] == 5
    assert "reserve_stock" in (saga["error"] or "")

    status, body = http_json("POST", f"{system.url}/sagas/{saga_id}/retry")
    assert status == 202, body
    saga = system.wait_for(saga_id, frozenset({"compensated"}), deadline.left("re-driven"))
    assert step(saga, "reserve_stock")["compensation_attempts"] == 6
    assert [s for _, s in events(saga, "compensation_succeeded")] == [
        "reserve_stock",
        "create_order",
    ]


def test_abort_compensates_a_running_saga(system: SagaSystem) -> None:
    """Aborting a saga while a step is running compensates what was done, with the reason."""
    # held_order waits an hour at reserve_stock: only the abort can end it within this test.
    saga_id = system.start_saga("held_order", order({"reserve_stock": "timeout"}), new_id("abort"))
    system.wait_until(saga_id, lambda s: step(s, "reserve_stock")["status"] == "running")
    status, body = http_json(
        "POST", f"{system.url}/sagas/{saga_id}/abort", {"reason": "customer changed their mind"}
    )
    assert status == 202, body
    saga = system.wait_for(saga_id)
    assert_compensated_by_abort(saga, "customer changed their mind")
    assert step(saga, "reserve_stock")["attempts"] == 1
    assert [s for _, s in events(saga, "compensation_succeeded")] == [
        "reserve_stock",
        "create_order",
    ]


def test_starting_the_same_saga_twice_makes_one_saga(system: SagaSystem) -> None:
    """A second start with the same saga_id is a no-op: one saga, one set of commands."""
    saga_id = new_id("twice")
    payload = order()
    system.start_saga("create_order", payload, saga_id)
    system.start_saga("create_order", payload, saga_id)
    system.wait_for(saga_id)
    started = [e for e in system.events_of(saga_id) if e["event"] == "saga_started"]
    assert len({e["seq"] for e in started}) == 1
    key = saga_id.encode()
    commands = [v for k, v in system.read_topic(system.catalog.commands("orders")) if k == key]
    assert len(commands) == 1


def test_sagas_started_in_transactions_run_and_their_offsets_are_committed(
    system: SagaSystem, deadline: Deadline
) -> None:
    """Starts from a transactional producer: a commit marker follows each transaction, an offset
    no record is read at. Every saga runs, and the worker's commits get past the markers rather
    than wait forever for a record that does not exist (then every restart replays it all)."""
    batches = [system.ids_on_every_partition(f"tx{n}") for n in range(3)]
    system.start_in_transactions(
        [[("create_order", order(), saga_id) for saga_id in batch] for batch in batches]
    )
    ends = system.end_offsets(system.catalog.requests)  # each one just past a commit marker
    for saga_id in (saga_id for batch in batches for saga_id in batch):
        saga = system.wait_for(saga_id, timeout=deadline.left(f"{saga_id} finished"))
        assert saga["status"] == "completed", saga
    eventually(
        lambda: system.committed_offsets(system.catalog.requests),
        lambda committed: all(committed.get(p, -1) >= end - 1 for p, end in ends.items()),
        f"the orchestrator committed up to the last commit markers {ends}",
        timeout=deadline.left("offsets committed"),
    )


def test_command_delivered_twice_has_one_effect(system: SagaSystem, deadline: Deadline) -> None:
    """The same command twice gets the same reply twice but reserves the stock once."""
    saga_id, sku = new_id("dup"), new_id("sku")
    reply_topic = f"{system.catalog.prefix}test.replies.{saga_id}"
    payload = order(qty=400)
    payload["items"][0]["sku"] = sku
    command = {
        "message_id": f"{saga_id}:reserve_stock:command:1",
        "saga_id": saga_id,
        "saga_type": "create_order",
        "step": "reserve_stock",
        "kind": "command",
        "action": "reserve_stock",
        "attempt": 1,
        "payload": payload,
        "reply_to": reply_topic,
    }
    raw = json.dumps(command).encode()
    system.create_topic(reply_topic)
    system.produce(system.catalog.commands("inventory"), saga_id.encode(), [raw, raw])
    replies = poll_topic(system, reply_topic, count=2, timeout=deadline.left("the two replies"))
    assert replies[0] == replies[1]
    assert json.loads(replies[0])["outcome"] == "success"
    # Reserved once, 600 of the 1,000 are left; reserved twice, only 200 would be.
    assert order_of(system, sku, STOCK - 400, deadline.left("the probe"))["status"] == "completed"


STOCK = 1000
"""Units of each sku the inventory participant starts with (DESIGN.md)."""


def order_of(system: SagaSystem, sku: str, qty: int, timeout: float = 60) -> dict[str, Any]:
    """Order `qty` units of `sku` and wait for the saga's end: it completes only if in stock."""
    payload = order(qty=qty)
    payload["items"][0]["sku"] = sku
    return system.wait_for(
        system.start_saga("create_order", payload, new_id("probe")), timeout=timeout
    )


def poll_topic(system: SagaSystem, topic: str, count: int, timeout: float = 30) -> list[bytes]:
    deadline = time.monotonic() + timeout
    values: list[bytes] = []
    while time.monotonic() < deadline:
        try:
            values = [v for _, v in system.read_topic(topic) if v]
        except AssertionError:
            values = []
        if len(values) >= count:
            return values
        time.sleep(0.2)  # polling interval
    raise AssertionError(f"{topic}: {len(values)} of {count} records after {timeout}s")


def test_bad_messages_are_dead_lettered_and_others_still_complete(system: SagaSystem) -> None:
    """Garbage, an unknown saga type and a reply for no saga go to saga.dlq; sagas go on."""
    requests = system.catalog.requests
    bad_id = new_id("bad")
    system.produce(requests, bad_id.encode(), [b"{not json", b'{"type":"start"}'])
    system.start_saga("no_such_saga", {}, bad_id)
    stray = {
        "message_id": "x",
        "in_reply_to": "y",
        "saga_id": new_id("ghost"),
        "step": "create_order",
        "kind": "command",
        "attempt": 1,
        "outcome": "success",
    }
    system.produce(system.catalog.replies, stray["saga_id"].encode(), [json.dumps(stray).encode()])
    good = system.start_saga("create_order", order(), new_id("good"))
    assert system.wait_for(good)["status"] == "completed"

    letters = system.dead_letters()
    errors = " | ".join(letter["error"] for letter in letters)
    assert any(letter["value"] == "{not json" for letter in letters), errors
    assert "saga_type" in errors
    assert "no_such_saga" in errors and "create_order" in errors  # names the known types
    assert f"unknown saga {stray['saga_id']!r}" in errors
    assert system.get(bad_id) is None


def test_the_published_json_schemas_validate_what_the_processor_emits(
    system: SagaSystem, tmp_path: Path, deadline: Deadline
) -> None:
    """Every command, reply, event, request and dead letter of two sagas fits `saga schema`."""
    assert (
        subprocess.run(
            [sys.executable, "-m", "saga_app.cli", "schema", "--out", str(tmp_path)], check=False
        ).returncode
        == 0
    )
    schemas = {
        p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in tmp_path.iterdir()
    }
    done = system.start_saga("create_order", order(), new_id("schema-ok"))
    undone = system.start_saga(
        "create_order", order({"charge_payment": "fail"}), new_id("schema-no")
    )
    for saga_id in (done, undone):
        system.wait_for(saga_id, timeout=deadline.left(saga_id))
    ghost = new_id("schema-ghost")  # a reply for a saga that does not exist: a dead letter
    system.produce(system.catalog.replies, ghost.encode(), [json.dumps({
        "message_id": "m", "in_reply_to": "c", "saga_id": ghost, "step": "s",
        "kind": "command", "attempt": 1, "outcome": "success"}).encode()])  # fmt: skip
    letters = deadline_poll(
        lambda: [d for d in system.dead_letters() if ghost in d["value"]],
        deadline.left("the ghost's dead letter"),
    )

    ours = {done.encode(), undone.encode()}
    c = system.catalog
    by_schema: dict[str, list[Any]] = {"dead_letter": letters}
    for schema, topics in [
        ("command", [c.commands(p) for p in ("orders", "inventory", "payments", "notifications")]),
        ("reply", [c.replies]),
        ("event", [c.events]),
        ("request", [c.requests]),
    ]:
        for topic in topics:
            values = [json.loads(v) for k, v in system.read_topic(topic) if k in ours and v]
            by_schema.setdefault(schema, []).extend(values)
    assert {len(v) > 0 for v in by_schema.values()} == {True}, {
        k: len(v) for k, v in by_schema.items()
    }
    assert {m["kind"] for m in by_schema["command"]} == {"command", "compensation"}
    for schema, messages in by_schema.items():
        for message in messages:
            jsonschema.validate(message, schemas[schema])
    with pytest.raises(jsonschema.ValidationError):  # and the schemas do reject what is wrong
        jsonschema.validate({**by_schema["reply"][0], "outcome": "maybe"}, schemas["reply"])


def deadline_poll(find: Any, timeout: float = 30.0) -> list[Any]:
    """Call `find` until it returns something; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (found := find()):
        assert time.monotonic() < deadline, "nothing found before the deadline"
        time.sleep(0.2)  # polling interval
    return list(found)
