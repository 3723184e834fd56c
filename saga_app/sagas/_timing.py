"""The retry and timeout policy of the example sagas, in one place.

Short on purpose: a demo shows timeouts, retries and rollbacks within seconds.
"""

from saga_app.definition import RetryPolicy

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1)
COMPENSATION_RETRY = RetryPolicy(
    max_attempts=5, initial_delay=0.2, multiplier=2.0, max_delay=2.0, jitter=0.1
)
TIMEOUT = 3.0
DEADLINE = 60.0
