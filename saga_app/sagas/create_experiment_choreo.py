"""`create_experiment_choreo`: `create_experiment` as a choreography, tracked, not orchestrated.

Nobody sends commands. The user's request (`experiment.requested` on `experiments.requests`)
makes the experiments service create the experiment; each service then reacts to the one
before it (`participants/choreography.py`): experiment.created -> resources allocate ->
resources.allocated -> metrics initialize -> metrics.initialized -> the user is notified. The
tracker follows the same events; when one fails or the deadline passes it announces
`saga.failed` / `saga.timeout` on `saga.outcomes`, and each service undoes its part.
"""

from saga_app.tracked import EventPattern, TrackedSagaDefinition, TrackedStep

EXPERIMENTS, RESOURCES, METRICS, NOTIFICATIONS = (
    "experiments.events",
    "resources.events",
    "metrics.events",
    "notifications.events",
)

CREATE_EXPERIMENT_CHOREO = TrackedSagaDefinition(
    name="create_experiment_choreo",
    version=1,
    deadline=10.0,
    compensation_deadline=10.0,
    started=EventPattern("experiments.requests", "experiment.requested"),
    steps=(
        TrackedStep(
            name="create_experiment",
            service="experiments",
            done=EventPattern(EXPERIMENTS, "experiment.created"),
            failed=EventPattern(EXPERIMENTS, "experiment.failed"),
            compensated=EventPattern(EXPERIMENTS, "experiment.deleted"),
        ),
        TrackedStep(
            name="allocate_resources",
            service="resources",
            done=EventPattern(RESOURCES, "resources.allocated"),
            failed=EventPattern(RESOURCES, "resources.failed"),
            compensated=EventPattern(RESOURCES, "resources.released"),
        ),
        TrackedStep(
            name="initialize_metrics",
            service="metrics",
            done=EventPattern(METRICS, "metrics.initialized"),
            failed=EventPattern(METRICS, "metrics.failed"),
            compensated=EventPattern(METRICS, "metrics.cleaned_up"),
        ),
        TrackedStep(
            name="notify_user",
            service="notifications",
            done=EventPattern(NOTIFICATIONS, "user.notified"),
            failed=EventPattern(NOTIFICATIONS, "notification.failed"),
        ),
    ),
)
