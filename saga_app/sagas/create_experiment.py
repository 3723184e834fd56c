"""`create_experiment`: experiment, resources, metrics, then tell the user (DESIGN.md).

Payload: `user_id`, `name`, `resources`. No pivot: if even the notification fails, everything
before it is undone. Timeouts and backoffs are short so demos show failures within seconds.
"""

from saga_app.definition import RetryPolicy, SagaDefinition, Step

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1)
COMPENSATION_RETRY = RetryPolicy(
    max_attempts=5, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1
)
TIMEOUT = 3.0

CREATE_EXPERIMENT = SagaDefinition(
    name="create_experiment",
    version=1,
    deadline=60.0,
    steps=(
        Step(
            name="create_experiment",
            participant="experiments",
            action="create",
            compensation="delete",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
        ),
        Step(
            name="allocate_resources",
            participant="resources",
            action="allocate",
            compensation="release",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
        ),
        Step(
            name="initialize_metrics",
            participant="metrics",
            action="initialize",
            compensation="cleanup",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
        ),
        Step(
            name="notify_user",
            participant="notifications",
            action="notify_user",
            compensation=None,
            timeout=TIMEOUT,
            retry=RETRY,
        ),
    ),
)
