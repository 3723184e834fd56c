"""`create_experiment`: experiment, resources, metrics, then tell the user (DESIGN.md).

Payload: `user_id`, `name`, `resources`. No pivot: if even the notification fails, everything
before it is undone.
"""

from saga_app.definition import SagaDefinition, Step
from saga_app.sagas._timing import COMPENSATION_RETRY, DEADLINE, RETRY, TIMEOUT

CREATE_EXPERIMENT = SagaDefinition(
    name="create_experiment",
    version=1,
    deadline=DEADLINE,
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
