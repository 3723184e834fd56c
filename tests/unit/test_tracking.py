"""The tracker without Kafka: a choreographed saga followed by its domain events alone."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from saga_app import InvalidEvent, SagaState, track
from saga_app.engine import Decision
from saga_app.sagas import CREATE_EXPERIMENT_CHOREO as CHOREO
from saga_app.tracked import EventPattern, TrackedSagaDefinition, TrackedStep
from saga_app.tracking import TrackerInput, announcement
from topics import AbortSaga, ObservedEvent, RetrySaga, SagaTimeout, StartSaga

REQUESTED = ("experiments.requests", "experiment.requested")
CREATED = ("experiments.events", "experiment.created")
ALLOCATED = ("resources.events", "resources.allocated")
INITIALIZED = ("metrics.events", "metrics.initialized")
NOTIFIED = ("notifications.events", "user.notified")
DONE_EVENTS = [CREATED, ALLOCATED, INITIALIZED, NOTIFIED]


def seen(where: tuple[str, str], saga_id: str = "s1", **fields: Any) -> ObservedEvent:
    topic, kind = where
    event = {"type": kind, "saga_id": saga_id, **fields}
    return ObservedEvent(saga_id=saga_id, saga_type=CHOREO.name, topic=topic, event=event)


class Tracked:
    """One saga fed event after event, a second apart, keeping every decision."""

    def __init__(self) -> None:
        self.state: SagaState | None = None
        self.decisions: list[Decision] = []
        self.now = 100.0

    def feed(self, *events: TrackerInput, at: float | None = None) -> Tracked:
        for event in events:
            self.now = at if at is not None else self.now + 1
            decision = track(CHOREO, self.state, event, self.now)
            self.decisions.append(decision)
            if decision.state is not None:
                self.state = decision.state
        return self

    @property
    def saga(self) -> SagaState:
        assert self.state is not None
        return self.state

    def announced(self) -> list[tuple[str, list[str], list[str]]]:
        return [
            (o.type, o.steps_done, o.compensations) for d in self.decisions for o in d.announcements
        ]

    def statuses(self) -> dict[str, str]:
        return {s.name: s.status.value for s in self.saga.steps}

    def timeout(self, timer: str) -> SagaTimeout:
        due = next(t for t in self.saga.timers() if t.timer == timer)
        return due


def test_the_steps_events_in_order_complete_the_saga_and_announce_it_once() -> None:
    """Every step's done event, in order, completes the saga and announces saga.completed."""
    t = Tracked().feed(seen(REQUESTED), *(seen(e) for e in DONE_EVENTS))
    assert t.saga.status == "completed" and t.saga.mode == "tracked"
    assert set(t.statuses().values()) == {"succeeded"}
    steps = [s.name for s in CHOREO.steps]
    assert t.announced() == [("saga.completed", steps, [])]
    assert [h.event for h in t.saga.history] == [
        "saga_started",
        *["step_succeeded"] * 4,
        "saga_completed",
    ]
    assert t.saga.history[1].detail == "experiment.created on experiments.events"
    assert t.saga.deadline_at is None and t.saga.timers() == []


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_out_of_order_and_duplicated_events_complete_it_the_same(order: tuple[int, ...]) -> None:
    """Whatever order the events come in, each twice, the saga completes exactly once."""
    events = [seen(DONE_EVENTS[i]) for i in order]
    t = Tracked().feed(*(e for event in events for e in (event, event)))
    assert t.saga.status == "completed"
    assert [a[0] for a in t.announced()] == ["saga.completed"]
    duplicates = [d.ignored for d in t.decisions[1::2]]
    assert duplicates == ["duplicate_event"] * 4
    assert t.saga.steps[order[0]].finished_at == 101.0  # the first event began it


def test_a_failure_announces_the_steps_done_and_waits_for_their_compensations() -> None:
    """metrics failing rolls back experiments and resources: saga.failed names them, their
    compensation events end it compensated, in whatever order they come."""
    t = Tracked().feed(seen(REQUESTED), seen(CREATED), seen(ALLOCATED))
    t.feed(seen(("metrics.events", "metrics.failed"), reason="no quota"))
    assert t.saga.status == "compensating"
    assert t.saga.error == "step initialize_metrics failed: no quota"
    done = ["create_experiment", "allocate_resources"]
    assert t.announced() == [("saga.failed", done, done)]
    assert t.statuses()["initialize_metrics"] == "failed"
    assert t.saga.timer is not None and t.saga.timer.due_at == t.now + CHOREO.compensation_deadline
    t.feed(seen(("resources.events", "resources.released")))
    assert t.saga.status == "compensating"
    t.feed(seen(("experiments.events", "experiment.deleted")))
    assert t.saga.status == "compensated" and t.saga.timer is None
    assert t.statuses() == {
        "create_experiment": "compensated",
        "allocate_resources": "compensated",
        "initialize_metrics": "failed",
        "notify_user": "pending",
    }


def test_the_deadline_announces_a_timeout_with_what_was_done() -> None:
    """A service that never publishes: at the deadline saga.timeout names the steps done."""
    t = Tracked().feed(seen(REQUESTED), seen(CREATED))
    assert t.saga.deadline_at == 101.0 + CHOREO.deadline
    t.feed(t.timeout("deadline"))
    assert t.announced() == [("saga.timeout", ["create_experiment"], ["create_experiment"])]
    assert "without allocate_resources, initialize_metrics, notify_user" in (t.saga.error or "")
    t.feed(seen(("experiments.events", "experiment.deleted")))
    assert t.saga.status == "compensated"


def test_nothing_done_by_the_deadline_compensates_at_once_but_still_announces() -> None:
    """With no step seen there is nothing to wait for; the announcement still goes out, for a
    service that acted without saying so."""
    t = Tracked().feed(seen(REQUESTED))
    t.feed(t.timeout("deadline"))
    assert t.saga.status == "compensated"
    assert t.announced() == [("saga.timeout", [], [])]


def test_missing_compensations_fail_the_saga_and_a_retry_announces_again() -> None:
    """No compensation event by the compensation deadline: failed, naming the service; an
    operator retry announces again (attempt 2); a late compensation still ends it."""
    t = Tracked().feed(seen(CREATED), seen(("resources.events", "resources.failed")))
    first = t.timeout("step")
    t.feed(first)
    assert t.saga.status == "failed"
    assert t.saga.error == "no compensation event from experiments within 10s"
    t.feed(first)
    assert t.decisions[-1].ignored == "stale_timeout"
    t.feed(RetrySaga(saga_id="s1"))
    assert t.saga.status == "compensating"
    [*_, again] = [o for d in t.decisions for o in d.announcements]
    assert (again.type, again.attempt) == ("saga.failed", 2)
    assert again.compensations == ["create_experiment"]
    t.feed(seen(("experiments.events", "experiment.deleted")))
    assert t.saga.status == "compensated"


def test_a_late_compensation_settles_a_failed_saga() -> None:
    """The last missing compensation, after the saga failed for want of it, compensates it."""
    t = Tracked().feed(seen(CREATED), seen(("resources.events", "resources.failed")))
    t.feed(t.timeout("step"), seen(("experiments.events", "experiment.deleted")))
    assert t.saga.status == "compensated"


def test_a_step_done_while_rolling_back_is_waited_for_and_announced_again() -> None:
    """A service that acted after the timeout is asked to undo it too."""
    t = Tracked().feed(seen(CREATED))
    t.feed(t.timeout("deadline"), seen(ALLOCATED))
    assert t.statuses()["allocate_resources"] == "compensating"
    assert [a[2] for a in t.announced()] == [
        ["create_experiment"],
        ["create_experiment", "allocate_resources"],
    ]
    t.feed(seen(("experiments.events", "experiment.deleted")))
    assert t.saga.status == "compensating"
    t.feed(seen(("resources.events", "resources.released")))
    assert t.saga.status == "compensated"


def test_events_after_the_end_are_recorded_once_and_not_applied() -> None:
    """A step's event after the saga completed goes into the history once, changing nothing."""
    t = Tracked().feed(*(seen(e) for e in DONE_EVENTS))
    late = seen(("resources.events", "resources.released"))
    t.feed(late, late)
    assert t.saga.status == "completed"
    assert [h.event for h in t.saga.history][-1] == "event_after_end"
    assert t.decisions[-1].ignored == "duplicate_event"
    assert not [o for o in t.decisions[-2].announcements]


def test_a_compensation_for_a_saga_never_seen_names_an_unknown_saga() -> None:
    """Only a step or start event begins a saga; the orchestrator dead-letters the rest."""
    decision = track(CHOREO, None, seen(("resources.events", "resources.released")), 1.0)
    assert decision == Decision(None, ignored="unknown_saga")


def test_an_event_the_definition_does_not_declare_changes_nothing() -> None:
    t = Tracked().feed(seen(CREATED))
    before = t.saga
    t.feed(seen(("resources.events", "resources.audited")))
    assert t.decisions[-1] == Decision(before, ignored="unmatched_event")


def test_a_start_request_for_a_tracked_saga_is_refused() -> None:
    """Tracked sagas begin with their services' events; a start says so."""
    with pytest.raises(InvalidEvent, match="begins with its first domain event"):
        track(CHOREO, None, StartSaga(saga_id="s1", saga_type=CHOREO.name), 1.0)


def test_an_abort_rolls_back_a_running_saga() -> None:
    t = Tracked().feed(seen(CREATED), AbortSaga(saga_id="s1", reason="wrong experiment"))
    assert t.saga.error == "aborted: wrong experiment"
    assert t.announced() == [("saga.failed", ["create_experiment"], ["create_experiment"])]
    t.feed(AbortSaga(saga_id="s1"))
    assert t.decisions[-1].ignored == "not_running"


def test_tracking_is_pure_and_replays_the_same() -> None:
    """The same event on the same state decides the same, and leaves the input as it was."""
    t = Tracked().feed(seen(CREATED), seen(ALLOCATED))
    state = t.saga
    frozen = state.model_dump()
    failure = seen(("metrics.events", "metrics.failed"))
    first, second = (track(CHOREO, state, failure, 500.0) for _ in range(2))
    assert first == second
    assert state.model_dump() == frozen
    assert first.state is not None and announcement(first.state) == first.announcements[0]


def test_a_described_definition_names_each_event_as_people_read_it() -> None:
    """GET /definitions labels a pattern by its type, or by its predicate's name when it has
    none, and says which event a saga begins with (what `saga start` and POST /sagas cite)."""

    def has_label(event: dict[str, Any]) -> bool:
        return bool(event.get("label"))

    labelled = TrackedSagaDefinition(
        name="label_parcel",
        version=1,
        deadline=5.0,
        steps=(
            TrackedStep("label", "warehouse", EventPattern("warehouse.events", where=has_label)),
        ),
    )
    described = labelled.describe()
    assert described["steps"][0]["done"]["label"] == "has_label on warehouse.events"
    assert described["starts_with"] == "has_label on warehouse.events"
    assert CHOREO.describe()["starts_with"] == "experiment.requested on experiments.requests"
