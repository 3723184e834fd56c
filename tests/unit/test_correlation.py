"""The tracker's path through the worker without Kafka: domain event -> re-keyed -> applied."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from saga_app.correlation import Correlator
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator
from saga_app.record import Record
from tests.unit.test_orchestrator import CATALOG, SAGAS, DictStore, ListPublisher

SAGA = "create_experiment_choreo"


def make() -> tuple[Correlator, Orchestrator, DictStore, ListPublisher]:
    store, publisher = DictStore(), ListPublisher()
    metrics = SagaMetrics(CollectorRegistry())
    orchestrator = Orchestrator(CATALOG, SAGAS, store, publisher, metrics)
    correlator = Correlator(CATALOG, SAGAS, publisher, metrics, orchestrator.dead_letter)
    return correlator, orchestrator, store, publisher


def domain(topic: str, value: Any, key: bytes | None = b"anything", offset: int = 0) -> Record:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Record(CATALOG.domain(topic), 0, offset, key, raw, 1000.0 + offset)


async def forward_all(correlator: Correlator, orchestrator: Orchestrator, publisher: ListPublisher,
                      records: list[Record]) -> None:  # fmt: skip
    """Each domain record through the correlator, then what it re-keyed through the saga's
    owner, as the two hops run on a worker."""
    for r in records:
        await correlator.handle(r)
    forwarded = [(k, v) for t, k, v in publisher.sent if t == CATALOG.requests]
    publisher.sent = [s for s in publisher.sent if s[0] != CATALOG.requests]
    for offset, (key, value) in enumerate(forwarded):
        raw = json.dumps(value).encode()
        await orchestrator.handle(Record(CATALOG.requests, 0, offset, key, raw, 2000.0 + offset))


async def test_events_keyed_by_anything_are_re_keyed_by_saga_id_and_applied() -> None:
    """A service's events, keyed by its own ids, reach the saga's state under the saga id; the
    completed saga is announced on saga.outcomes."""
    correlator, orchestrator, store, publisher = make()
    events = [
        ("experiments.events", "experiment.created"),
        ("resources.events", "resources.allocated"),
        ("metrics.events", "metrics.initialized"),
        ("notifications.events", "user.notified"),
    ]
    await correlator.handle(domain(events[0][0], {"type": events[0][1], "saga_id": "e1"}))
    [(topic, key, observed)] = publisher.sent
    assert (topic, key) == (CATALOG.requests, b"e1")
    assert observed == {
        "type": "observed",
        "saga_id": "e1",
        "saga_type": SAGA,
        "topic": "experiments.events",
        "event": {"type": "experiment.created", "saga_id": "e1"},
    }
    publisher.sent.clear()
    records = [domain(t, {"type": k, "saga_id": "e1"}, offset=i) for i, (t, k) in enumerate(events)]
    await forward_all(correlator, orchestrator, publisher, records)
    assert store.states["e1"].status == "completed"
    [outcome] = publisher.to(CATALOG.outcomes)
    assert outcome["type"] == "saga.completed" and outcome["saga_id"] == "e1"
    assert orchestrator.listing.stats()["by_type"] == {SAGA: {"completed": 1}}


async def test_unrelated_events_are_skipped_and_bad_ones_dead_lettered() -> None:
    """Events no tracked saga declares are passed over; garbage and events without a saga id
    go to the dead-letter topic with the reason, and the next event is still forwarded."""
    correlator, _, _, publisher = make()
    await correlator.handle(domain("resources.events", {"type": "resources.audited"}))
    assert publisher.sent == []
    await correlator.handle(domain("resources.events", b"{not json"))
    await correlator.handle(domain("resources.events", {"type": "resources.allocated"}))
    await correlator.handle(domain("resources.events", [1, 2]))
    reasons = [letter["error"] for letter in publisher.to(CATALOG.dlq)]
    assert reasons[0].startswith("domain event on resources.events: not valid JSON")
    assert reasons[1] == (
        "resources.allocated on resources.events is an event of tracked saga "
        "create_experiment_choreo, but has no saga id in its field 'saga_id'"
    )
    assert reasons[2] == "domain event on resources.events: expected a JSON object, got list"
    await correlator.handle(
        domain("resources.events", {"type": "resources.allocated", "saga_id": 7})
    )
    assert [k for t, k, _ in publisher.sent if t == CATALOG.requests] == [b"7"]


async def test_a_compensation_for_an_unknown_saga_and_a_start_request_are_dead_lettered() -> None:
    """The owner refuses what cannot begin a tracked saga, saying why."""
    correlator, orchestrator, store, publisher = make()
    released = domain("resources.events", {"type": "resources.released", "saga_id": "ghost"})
    await forward_all(correlator, orchestrator, publisher, [released])
    start = {"type": "start", "saga_id": "x", "saga_type": SAGA}
    await orchestrator.handle(Record(CATALOG.requests, 0, 9, b"x", json.dumps(start).encode(), 1.0))
    reasons = [letter["error"] for letter in publisher.to(CATALOG.dlq)]
    assert reasons == [
        "unknown saga 'ghost': a compensation event, but the tracker saw nothing else of this saga",
        "create_experiment_choreo is a tracked saga: it begins with its first domain event, "
        "not with a start request",
    ]
    assert store.states == {}


async def test_a_replayed_event_announces_the_outcome_again() -> None:
    """After a takeover, an event read again that changes nothing re-sends the saga's latest
    announcement: the first one may have died with the worker."""
    correlator, orchestrator, _, publisher = make()
    failed = {"type": "resources.failed", "saga_id": "e2", "reason": "none left"}
    records = [
        domain("experiments.events", {"type": "experiment.created", "saga_id": "e2"}),
        domain("resources.events", failed, offset=1),
    ]
    await forward_all(correlator, orchestrator, publisher, records)
    [announced] = publisher.to(CATALOG.outcomes)
    assert announced["type"] == "saga.failed" and announced["steps_done"] == ["create_experiment"]
    orchestrator.owned_since = {0: 10_000.0}
    await forward_all(correlator, orchestrator, publisher, records[1:])
    assert publisher.to(CATALOG.outcomes) == [announced, announced]
