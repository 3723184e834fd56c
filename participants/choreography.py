"""The services of `create_experiment_choreo`: each reacts to the one before it, none is commanded.

    experiment.requested -> experiments -> experiment.created -> resources -> resources.allocated
    -> metrics -> metrics.initialized -> notifications -> user.notified

Each keeps a record per saga, so a redelivered event finds its work done and publishes the same
event again, and each undoes its part when the tracker announces `saga.failed` or `saga.timeout`
for the saga (on `saga.outcomes`), then says so (`experiment.deleted`, `resources.released`,
`metrics.cleaned_up`). A service that is told to undo before it acted records that, so a late
cue does nothing. `saga services` runs them all in one process, simulate hooks on.
"""

from __future__ import annotations

from participants.resources import POOL, requested_units
from saga_app import Emit, Event, Records, Service, emit
from saga_app.sagas.create_experiment_choreo import CREATE_EXPERIMENT_CHOREO

SAGA = CREATE_EXPERIMENT_CHOREO.name
OUTCOMES = "saga.outcomes"
ROLL_BACK = ("saga.failed", "saga.timeout")

experiments = Service("experiments", publishes_to="experiments.events")
resources = Service("resources", publishes_to="resources.events")
metrics = Service("metrics", publishes_to="metrics.events")
notifications = Service("notifications", publishes_to="notifications.events")


def _act(records: Records, event: Event, done: Emit) -> Emit | None:
    """Do this service's part once per saga; None if the saga was rolled back before."""
    saga_id = str(event["saga_id"])
    record = records.get(saga_id)
    if record is not None and record["status"] == "undone":
        return None  # told to undo before the cue came: stay out of it
    if record is None:
        records.put(saga_id, {"status": "done"})
    return done


def _undo(records: Records, event: Event, undone: str) -> Emit | None:
    """Undo this service's part of a saga that is rolled back, and say so if it had acted;
    again each time it is told (an operator retry announces the failure again)."""
    if event.get("saga_type") != SAGA:
        return None
    saga_id = str(event["saga_id"])
    record = records.get(saga_id)
    if record is None or record["status"] == "done":
        record = {"status": "undone", "acted": record is not None}
        records.put(saga_id, record)
    return emit(undone) if record["acted"] else None


def _undoes(service: Service, undone: str) -> None:
    @service.on(OUTCOMES, *ROLL_BACK)
    def undo(event: Event, records: Records) -> Emit | None:
        return _undo(records, event, undone)


@experiments.on("experiments.requests", "experiment.requested", fails_with="experiment.failed")
def create(event: Event, records: Records) -> Emit | None:
    if not event.get("name"):
        return emit("experiment.failed", reason="an experiment needs a 'name'")
    created = emit(
        "experiment.created",
        experiment_id=f"experiment-{event['saga_id']}",
        user_id=event.get("user_id"),
        resources=event.get("resources", 1),
    )
    return _act(records, event, created)


@resources.on("experiments.events", "experiment.created", fails_with="resources.failed")
def allocate(event: Event, records: Records) -> Emit | None:
    try:
        units = requested_units(event.get("resources", 1))
    except (TypeError, ValueError):
        return emit("resources.failed", reason="resources must be a count or a mapping of counts")
    if not 0 <= units <= POOL:
        return emit("resources.failed", reason=f"not enough resources: want {units}, pool {POOL}")
    allocated = emit("resources.allocated", units=units, user_id=event.get("user_id"))
    return _act(records, event, allocated)


@metrics.on("resources.events", "resources.allocated", fails_with="metrics.failed")
def initialize(event: Event, records: Records) -> Emit | None:
    initialized = emit(
        "metrics.initialized",
        metrics_namespace=f"metrics/{event['saga_id']}",
        user_id=event.get("user_id"),
    )
    return _act(records, event, initialized)


@notifications.on("metrics.events", "metrics.initialized", fails_with="notification.failed")
def notify(event: Event, records: Records) -> Emit | None:
    return _act(records, event, emit("user.notified", user_id=event.get("user_id")))


_undoes(experiments, "experiment.deleted")
_undoes(resources, "resources.released")
_undoes(metrics, "metrics.cleaned_up")

SERVICES = [experiments, resources, metrics, notifications]
