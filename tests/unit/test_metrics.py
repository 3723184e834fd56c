"""What `SagaMetrics` counts per applied decision, read back from its registry."""

from __future__ import annotations

from saga_app import decide
from saga_app.metrics import SagaMetrics
from saga_app.sagas import CREATE_ORDER
from topics import StartSaga


def started(metrics: SagaMetrics, saga_id: str) -> None:
    start = StartSaga(saga_id=saga_id, saga_type="create_order", payload={"amount": 1})
    decision = decide(CREATE_ORDER, None, start, 1.0, reply_to="saga.replies")
    assert decision.state is not None
    metrics.observe(None, decision.state, decision)


def sample(metrics: SagaMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_start_counts_once_and_is_in_flight() -> None:
    metrics = SagaMetrics()
    started(metrics, "s-1")
    started(metrics, "s-2")
    assert sample(metrics, "saga_started_total", saga_type="create_order") == 2
    assert sample(metrics, "saga_in_flight", status="in_progress") == 2
    assert (
        sample(metrics, "saga_transitions_total", saga_type="create_order", event="saga_started")
        == 2
    )


def test_sagas_in_flight_count_again_from_the_recount_after_a_rebalance() -> None:
    """The recount replaces the gauge's children; later changes must reach the new ones."""
    metrics = SagaMetrics()
    started(metrics, "s-1")
    metrics.reset_in_flight({"in_progress": 5})
    started(metrics, "s-2")
    assert sample(metrics, "saga_in_flight", status="in_progress") == 6
