"""Runs choreography services as one Faust application: a handler per subscribed topic.

Each handler: decode the event, let every service that reacts to it run its handler (which
writes its records), and publish what the handler answered, keyed by the saga id. Records are
keyed by saga too; the example services' topics all have `SAGA_PARTITIONS` partitions and are
keyed by saga id, so a saga's records, events and outcomes share one partition (FAUST.md,
points 1 and 2).

`saga service mypkg.resources:resources` runs yours; `saga services` runs the examples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import structlog
from prometheus_client import CollectorRegistry, Counter

from saga_app.kafka_io import FaustPublisher, install_metrics, make_faust_app
from saga_app.participant import Records
from saga_app.participant_app import dead_letter_of, install_health
from saga_app.record import Record
from saga_app.registry import load_named
from saga_app.service import Service
from saga_app.settings import Settings
from saga_app.topology import service_group
from topics import MAX_MESSAGE_BYTES

log = structlog.get_logger("saga.services")


def load_services(specs: Sequence[str]) -> list[Service]:
    """Resolve `module:attribute` specs to services (an attribute may be a list of them)."""
    return load_named(specs, Service, "mypkg.resources:resources")


class ServiceWorker:
    """The Faust app running some services; its consumer group is named after them."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[Service],
        *,
        simulate: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.simulate = simulate
        self.catalog = settings.catalog
        self.services = list(services)
        self.app = make_faust_app(settings, service_group([s.name for s in services]))
        self.publisher = FaustPublisher(self.app)
        self.records = {
            s.name: Records(
                self.app.Table(
                    f"{s.name}-records",
                    key_type=bytes,
                    value_type=bytes,
                    partitions=settings.partitions,
                ),
                s.name,
            )
            for s in self.services
        }
        self._loaded: set[str] = set()
        for name in sorted({t for s in self.services for t in s.topics}):
            topic = self.app.topic(self.catalog.domain(name), key_type=bytes, value_type=bytes)
            self.app.consume(topic, self.handle)
        install_health(self.app)
        r = registry or CollectorRegistry()
        self.events = Counter(
            "saga_service_events",
            "Events a service reacted to, by what it published",
            ["service", "outcome"],
            registry=r,
        )
        install_metrics(self.app, r)

    async def handle(self, message: Record) -> None:
        """React to one event; an event nobody can read goes to the dead-letter topic."""
        topic = self.catalog.undomain(message.topic)
        raw: bytes = message.value or b""
        try:
            if len(raw) > MAX_MESSAGE_BYTES:
                raise ValueError(f"event is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} limit")
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("an event must be a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            await self._dead_letter(message, f"invalid event on {topic}: {e}")
            return
        for service in self.services:
            records = self.records[service.name]
            if service.name not in self._loaded and service.on_load is not None:
                service.on_load(records)  # state is recovered before any event is handled
            self._loaded.add(service.name)
            try:
                published = service.react(topic, event, records, simulate=self.simulate)
            except Exception as e:  # a handler bug must not stop the agent: park the event
                log.exception("handler_failed", service=service.name, topic=topic)
                await self._dead_letter(message, f"{service.name}: {type(e).__name__}: {e}")
                continue
            if service.reaction(topic, event) is None:
                continue
            self.events.labels(service.name, published[0][1]["type"] if published else "none").inc()
            for to, answer in published:
                key = str(answer.get("saga_id", "")).encode() or (message.key or b"")
                await self.publisher.send(self.catalog.domain(to), key, json.dumps(answer).encode())
            log.info(
                "event_handled",
                service=service.name,
                saga_id=event.get("saga_id"),
                on=event.get("type"),
                published=[answer["type"] for _, answer in published],
            )

    async def _dead_letter(self, message: Record, reason: str) -> None:
        log.warning("dead_lettered", topic=message.topic, offset=message.offset, reason=reason)
        await self.publisher.send(
            self.catalog.dlq, message.key or b"", dead_letter_of(message, reason)
        )
