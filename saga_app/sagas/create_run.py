"""`create_run`: run record, resources, metrics, then the worker that runs it (DESIGN.md).

Payload: `experiment_id`, `config`, `resources`. Every step can be undone, the worker included.
"""

from saga_app.definition import SagaDefinition, Step
from saga_app.sagas._timing import COMPENSATION_RETRY, DEADLINE, RETRY, TIMEOUT

CREATE_RUN = SagaDefinition(
    name="create_run",
    version=1,
    deadline=DEADLINE,
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
