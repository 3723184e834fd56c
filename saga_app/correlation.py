"""The tracker's first hop: a services' domain event in, the same event re-keyed by saga id out.

Services publish their events as they like: keyed by anything, on topics with any number of
partitions. A tracked saga's state must be written while a record of the saga's own partition
is processed (FAUST.md, point 1), so an event that means something to a tracked saga type is
not applied where it is read: it goes on to `saga.requests` as an `ObservedEvent` keyed by the
saga id, and the saga's owner applies it there (`saga_app.tracking`), in order with the saga's
timers. The source offset is committed only once that record is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Publisher
from saga_app.record import Record
from saga_app.registry import SagaRegistry
from saga_app.tracked import TrackedSagaDefinition
from topics import MAX_MESSAGE_BYTES, ObservedEvent, TopicCatalog

DeadLetterer = Callable[[Record, str], Awaitable[None]]


class Correlator:
    """Hands each domain event that a tracked saga type declares to that saga's partition."""

    def __init__(
        self,
        catalog: TopicCatalog,
        sagas: SagaRegistry,
        publisher: Publisher,
        metrics: SagaMetrics,
        dead_letter: DeadLetterer,
    ) -> None:
        self.catalog = catalog
        self.publisher = publisher
        self.metrics = metrics
        self.dead_letter = dead_letter
        self._by_type: dict[str, list[TrackedSagaDefinition]] = {}
        for definition in sorted(sagas.tracked(), key=lambda d: -d.version):
            self._by_type.setdefault(definition.name, []).append(definition)

    async def handle(self, record: Record) -> None:
        """Forward one record of a domain topic to every tracked saga it is for; never raises."""
        try:
            await self._handle(record)
        except Exception as e:  # a bug must not stop the other events of this partition
            await self.dead_letter(record, f"internal error: {type(e).__name__}: {e}")

    async def _handle(self, record: Record) -> None:
        topic = self.catalog.undomain(record.topic)
        try:
            event = _domain_event(record.value)
        except ValueError as e:
            await self.dead_letter(record, f"domain event on {topic}: {e}")
            return
        forwarded = False
        for versions in self._by_type.values():
            definition = next((d for d in versions if d.match(topic, event)), None)
            if definition is None:
                continue
            forwarded = True
            await self._forward(record, topic, event, definition)
        if not forwarded:
            self.metrics.ignored(kind="domain_event", reason="unmatched_event")

    async def _forward(
        self, record: Record, topic: str, event: dict[str, Any], definition: TrackedSagaDefinition
    ) -> None:
        saga_id = definition.saga_id_of(event)
        what = f"{event.get(definition.type_field, 'an event')} on {topic}"
        if saga_id is None:
            reason = (
                f"{what} is an event of tracked saga {definition.name}, but has no saga id in "
                f"its field {definition.saga_id_field!r}"
            )
            await self.dead_letter(record, reason)
            return
        try:
            observed = ObservedEvent(
                saga_id=saga_id, saga_type=definition.name, topic=topic, event=event
            )
        except ValidationError as e:
            reason = f"{what}: its saga id is not usable: {e.errors()[0]['msg']}"
            await self.dead_letter(record, reason)
            return
        value = observed.model_dump_json().encode()
        if len(value) > MAX_MESSAGE_BYTES:
            await self.dead_letter(
                record, f"{what} is {len(value)} bytes with its saga id, over {MAX_MESSAGE_BYTES}"
            )
            return
        await self.publisher.send(self.catalog.requests, self.catalog.key(saga_id), value)


def _domain_event(raw: bytes | None) -> dict[str, Any]:
    """The record's value as a JSON object, or a ValueError saying why it is not one."""
    if not raw:
        raise ValueError("empty message: expected a JSON object")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} byte limit")
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not valid JSON: {e}") from None
    if not isinstance(event, dict):
        raise ValueError(f"expected a JSON object, got {type(event).__name__}")
    return event
