"""`create_order`: order, stock, payment (the pivot), confirmation (DESIGN.md, "Example sagas").

Payload: `customer_id`, `items: [{sku, qty}]`, `amount`. Once the payment is charged the order
stands: the confirmation is retried until it is sent. Timeouts and backoffs are short so demos
show failures within seconds.
"""

from saga_app.definition import SagaDefinition, Step
from saga_app.sagas._timing import COMPENSATION_RETRY, DEADLINE, RETRY, TIMEOUT

CREATE_ORDER = SagaDefinition(
    name="create_order",
    version=1,
    deadline=DEADLINE,
    steps=(
        Step(
            name="create_order",
            participant="orders",
            action="create_order",
            compensation="cancel_order",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
        ),
        Step(
            name="reserve_stock",
            participant="inventory",
            action="reserve_stock",
            compensation="release_stock",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
        ),
        Step(
            name="charge_payment",
            participant="payments",
            action="charge",
            compensation="refund",
            timeout=TIMEOUT,
            retry=RETRY,
            compensation_retry=COMPENSATION_RETRY,
            pivot=True,
        ),
        Step(
            name="send_confirmation",
            participant="notifications",
            action="send_confirmation",
            compensation=None,
            timeout=TIMEOUT,
            retry=RETRY,
        ),
    ),
)
