"""`create_run`: run record, resources, metrics, then the worker that runs it (DESIGN.md).

Payload: `experiment_id`, `config`, `resources`. Every step can be undone, the worker included.
Timeouts and backoffs are short so demos show failures within seconds.
"""

from saga_app.definition import RetryPolicy, SagaDefinition, Step

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1)
COMPENSATION_RETRY = RetryPolicy(
    max_attempts=5, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1
)
TIMEOUT = 3.0

CREATE_RUN = SagaDefinition(
    name="create_run",
    version=1,
    deadline=60.0,
    steps=(
        Step(
            name="create_run",
            participant="experiments",
            action="create_run",
            compensation="delete_run",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
        ),
        Step(
            name="reserve_resources",
            participant="resources",
            action="reserve",
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
            name="start_worker",
            participant="workers",
            action="start",
            compensation="stop",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
        ),
    ),
)
