"""Tracked (choreographed) sagas on the real broker: services publish their own events, keyed
as they like; the worker's tracker follows them, announces how each saga ended on
`saga.outcomes`, and times out the ones that hang, also across a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import http_json

from saga_app.registry import EXAMPLES
from tests.integration.saga_system import Deadline, SagaSystem, eventually
from tests.integration.test_web import metric

TRACKED = "tests.integration.tracked_sagas"
CHOREO = "create_experiment_choreo"
SHIP = "ship_parcel_choreo"


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaSystem]:
    workdir: Path = tmp_path_factory.mktemp("choreography")
    prefix = f"c{uuid.uuid4().hex[:8]}."
    running = SagaSystem(kafka_bootstrap, workdir, prefix, sagas=[EXAMPLES, TRACKED], services=True)
    yield running.start()
    running.stop()


def request_experiment(system: SagaSystem, simulate: dict[str, str] | None = None) -> str:
    """Ask the experiments service for an experiment, as a user's front end would."""
    saga_id = f"exp-{uuid.uuid4().hex[:10]}"
    event: dict[str, Any] = {
        "type": "experiment.requested",
        "saga_id": saga_id,
        "user_id": "u1",
        "name": "resnet",
        "resources": {"gpus": 2},
    }
    if simulate:
        event["simulate"] = simulate
    system.produce_events([("experiments.requests", saga_id, event)])
    return saga_id


def history(saga: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(h["event"], h["step"]) for h in saga["history"]]


def statuses(saga: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in saga["steps"]}


def announced(system: SagaSystem, saga_id: str) -> list[tuple[str, list[str]]]:
    return [(o["type"], o["steps_done"]) for o in system.outcomes_of(saga_id)]


@pytest.mark.timeout(120)
def test_services_reacting_to_each_other_complete_a_tracked_saga(
    system: SagaSystem, deadline: Deadline
) -> None:
    """No commands: the services' own events complete the saga, shown like any other saga."""
    saga_id = request_experiment(system)
    saga = system.wait_for(saga_id, timeout=deadline.left("the saga completed"))
    assert saga["status"] == "completed", history(saga)
    assert saga["mode"] == "tracked"
    assert set(statuses(saga).values()) == {"succeeded"}
    # Each step once, from its own service's topic. Not in the services' order: the tracker
    # reads four topics, and events on different topics have no order between them (a fresh
    # clone's run saw resources.allocated applied before experiment.created).
    details = [h["detail"] for h in saga["history"] if h["event"] == "step_succeeded"]
    assert sorted(details) == [
        "experiment.created on experiments.events",
        "metrics.initialized on metrics.events",
        "resources.allocated on resources.events",
        "user.notified on notifications.events",
    ]
    steps = ["create_experiment", "allocate_resources", "initialize_metrics", "notify_user"]
    assert announced(system, saga_id) == [("saga.completed", steps)]
    assert not system.committed_offsets(system.catalog.dlq)  # the orchestrator parks nothing
    summary = eventually(
        lambda: http_json("GET", f"{system.url}/sagas?saga_type={CHOREO}")[1],
        lambda rows: any(r["saga_id"] == saga_id for r in rows),
        "the saga listed",
    )
    assert next(r for r in summary if r["saga_id"] == saga_id)["status"] == "completed"


@pytest.mark.timeout(120)
def test_events_out_of_order_duplicated_and_keyed_by_anything_count_once(
    system: SagaSystem, deadline: Deadline
) -> None:
    """The last step's event first, every event twice, keyed by parcel or not at all: each step
    counts once, the saga completes once, and a late event after the end is recorded, not applied.

    Events on different topics and partitions have no order between them, so the test waits for
    the last step's event to be applied before it publishes the others."""
    order_id = f"order-{uuid.uuid4().hex[:10]}"
    picked = ("courier.events", "van-3", {"type": "parcel.picked_up", "order_id": order_id})
    system.produce_events([picked, picked])
    system.wait_until(
        order_id,
        lambda s: statuses(s)["pick_up"] == "succeeded",
        deadline.left("the last step's event applied first"),
    )
    packed = ("warehouse.events", "parcel-9", {"type": "parcel.packed", "order_id": order_id})
    labelled = ("warehouse.events", None, {"type": "parcel.updated", "order_id": order_id,
                                           "label": "DHL-1"})  # fmt: skip
    unlabelled = ("warehouse.events", None, {"type": "parcel.updated", "order_id": order_id})
    system.produce_events([unlabelled, labelled, packed, labelled, packed, picked])
    saga = system.wait_for(order_id, timeout=deadline.left("the saga completed"))
    assert saga["status"] == "completed", history(saga)
    events = history(saga)
    assert events[:2] == [("saga_started", None), ("step_succeeded", "pick_up")]
    assert sorted(events[2:4]) == [("step_succeeded", "label"), ("step_succeeded", "pack")]
    assert events[4:] == [("saga_completed", None)]
    # The one worker counts them all; the duplicates published after the last step's event may
    # be read after the saga completed, so they are counted a moment later: poll.
    finished = {"saga_type": SHIP, "status": "completed"}
    duplicates = {"kind": "observed", "reason": "duplicate_event"}  # pick_up 2, label, pack
    scraped = eventually(
        lambda: http_json("GET", f"{system.url}/metrics")[1],
        lambda text: metric(text, "saga_ignored_events_total", **duplicates) >= 4,
        "the four duplicates counted",
    )
    assert metric(scraped, "saga_finished_total", **finished) >= 1
    unpacked = ("warehouse.events", "x", {"type": "parcel.unpacked", "order_id": order_id})
    system.produce_events([unpacked, unpacked])
    saga = system.wait_until(
        order_id,
        lambda s: s["history"][-1]["event"] == "event_after_end",
        deadline.left("the late event recorded"),
    )
    assert saga["status"] == "completed"
    assert [h["event"] for h in saga["history"]].count("event_after_end") == 1
    assert announced(system, order_id) == [("saga.completed", ["pack", "label", "pick_up"])]


@pytest.mark.timeout(120)
def test_a_failing_service_makes_the_earlier_ones_compensate(
    system: SagaSystem, deadline: Deadline
) -> None:
    """metrics fails: saga.failed names experiments and resources, both undo their part and
    say so, and the saga ends compensated."""
    saga_id = request_experiment(system, simulate={"metrics": "fail"})
    saga = system.wait_for(saga_id, timeout=deadline.left("the saga compensated"))
    assert saga["status"] == "compensated", history(saga)
    assert statuses(saga) == {
        "create_experiment": "compensated",
        "allocate_resources": "compensated",
        "initialize_metrics": "failed",
        "notify_user": "pending",
    }
    assert saga["error"] == "step initialize_metrics failed: simulated failure of metrics"
    # Kafka gives no order between topics: metrics.failed may be applied before
    # resources.allocated, and then the failure is announced again, naming it (tracking.py).
    announcements = announced(system, saga_id)
    assert {kind for kind, _ in announcements} == {"saga.failed"}
    assert announcements[-1] == ("saga.failed", ["create_experiment", "allocate_resources"])


@pytest.mark.timeout(120)
def test_a_service_that_never_publishes_times_the_saga_out(
    system: SagaSystem, deadline: Deadline
) -> None:
    """resources acts but never says so: at the deadline saga.timeout names the experiment,
    the experiments service deletes it, and resources, which did act, releases too."""
    saga_id = request_experiment(system, simulate={"resources": "silent"})
    saga = system.wait_for(saga_id, timeout=deadline.left("the saga timed out and compensated"))
    assert saga["status"] == "compensated", history(saga)
    assert ("deadline_exceeded", None) in history(saga)
    assert statuses(saga)["create_experiment"] == "compensated"
    assert statuses(saga)["allocate_resources"] == "pending"
    assert announced(system, saga_id) == [("saga.timeout", ["create_experiment"])]
    # Whether the release comes before or after the experiment's deletion ends the saga, it is
    # recorded, never applied: the tracker never saw resources act.
    release = "resources.released on resources.events"
    released = eventually(
        lambda: system.get(saga_id) or {},
        lambda s: any(h["detail"] == release for h in s["history"]),
        "resources' release recorded",
    )
    noted = [h for h in released["history"] if h["step"] == "allocate_resources"]
    assert [h["event"] for h in noted] in (["event_not_awaited"], ["event_after_end"]), noted
    assert statuses(released)["allocate_resources"] == "pending"


@pytest.mark.timeout(200)
def test_a_tracker_killed_mid_saga_loses_nothing_and_times_out_once(
    system: SagaSystem, deadline: Deadline
) -> None:
    """kill -9 of the worker between a saga's events: after the restart the saga completes
    from the rest; another saga's deadline, passed while the worker was down, fires once."""
    done_id, late_id = (f"order-{uuid.uuid4().hex[:10]}" for _ in range(2))
    system.produce_events(
        [
            ("warehouse.events", None, {"type": "parcel.packed", "order_id": done_id}),
            ("warehouse.events", None, {"type": "parcel.packed", "order_id": late_id}),
        ]
    )
    for saga_id in (done_id, late_id):
        system.wait_until(
            saga_id,
            lambda s: s["steps"][0]["status"] == "succeeded",
            deadline.left("both sagas begun"),
        )
    worker = system.workers[0]
    worker.stop(signal.SIGKILL)
    system.produce_events(
        [
            (
                "warehouse.events",
                None,
                {"type": "parcel.updated", "order_id": done_id, "label": "L"},
            ),
            ("courier.events", None, {"type": "parcel.picked_up", "order_id": done_id}),
        ]
    )
    worker.start().wait_ready(deadline.left("the worker back after kill -9"))
    done = system.wait_for(done_id, timeout=deadline.left("the first saga completed"))
    assert done["status"] == "completed", history(done)
    late = system.wait_for(late_id, timeout=deadline.left("the second saga timed out"))
    # pack's compensation never comes: the saga fails after the compensation deadline.
    assert late["status"] == "failed", history(late)
    assert [e for e, _ in history(late)].count("deadline_exceeded") == 1
    timeouts = [o for o in system.outcomes_of(late_id) if o["type"] == "saga.timeout"]
    assert {(o["attempt"], tuple(o["steps_done"])) for o in timeouts} == {(1, ("pack",))}
    assert late["error"] == "no compensation event from warehouse within 4s"


@pytest.mark.timeout(120)
def test_a_tracked_type_is_listed_with_its_kind_and_refused_as_a_command(
    system: SagaSystem,
) -> None:
    """GET /definitions shows both kinds; POST /sagas and `saga start` refuse a tracked type and
    say which event starts it."""
    status, definitions = http_json("GET", f"{system.url}/definitions")
    assert status == 200, definitions
    kinds = {d["name"]: d["kind"] for d in definitions}
    assert kinds[CHOREO] == kinds[SHIP] == "tracked"
    assert kinds["create_experiment"] == "orchestrated"

    status, refused = http_json("POST", f"{system.url}/sagas", {"saga_type": CHOREO, "payload": {}})
    assert status == 400, refused
    assert "experiment.requested on experiments.requests" in refused["error"]

    command = [sys.executable, "-m", "saga_app.cli", "start", CHOREO, "--url", system.url]
    env = {**os.environ, **system.env}
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 2, started.stdout
    assert "publish its first event (experiment.requested on experiments.requests)" in (
        started.stderr
    )
    listed = subprocess.run(command[:4] + command[5:], env=env, capture_output=True, text=True)
    assert f"{CHOREO} v1 (tracked: its services start it)" in listed.stdout.splitlines()
