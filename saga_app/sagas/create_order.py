"""`create_order`: order, stock, payment (the pivot), confirmation (DESIGN.md, "Example sagas").

Payload: `customer_id`, `items: [{sku, qty}]`, `amount`. Once the payment is charged the order
stands: the confirmation is retried until it is sent. Timeouts and backoffs are short so demos
show failures within seconds.
"""

from saga_app.definition import RetryPolicy, SagaDefinition, Step

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1)
COMPENSATION_RETRY = RetryPolicy(
    max_attempts=5, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1
)
TIMEOUT = 3.0

CREATE_ORDER = SagaDefinition(
    name="create_order",
    version=1,
    deadline=60.0,
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
