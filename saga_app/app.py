"""The orchestrator as a Faust application: one table, one agent, one timer, the web views.

Everything here is wiring. The agent hands each record to `Orchestrator.handle`; the timer hands
the clock to `Orchestrator.sweep`; the decisions are the engine's.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from saga_app.kafka_io import FaustPublisher, SagaRepository, make_faust_app, readiness
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator, Record
from saga_app.registry import SagaRegistry
from saga_app.settings import Settings
from saga_app.sweeper import PartitionProgress, sweep_watermark
from saga_app.topology import ORCHESTRATOR_APP, SAGA_TABLE
from saga_app.web import install_views
from saga_app.web_auth import bearer_auth

log = structlog.get_logger("saga.app")


class SagaWorker:
    """One orchestrator worker: the Faust app and the pieces it drives."""

    def __init__(
        self, settings: Settings, sagas: SagaRegistry, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.sagas = sagas
        self.catalog = settings.catalog
        self.app = make_faust_app(settings, ORCHESTRATOR_APP, [bearer_auth(settings)])
        self.table = self.app.Table(
            SAGA_TABLE,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
        )
        self.repository = SagaRepository(self.table)
        self.metrics = SagaMetrics(registry)
        self.publisher = FaustPublisher(self.app)
        self.orchestrator = Orchestrator(
            catalog=self.catalog,
            sagas=sagas,
            store=self.repository,
            publisher=self.publisher,
            metrics=self.metrics,
        )
        self.source = self.app.topic(
            self.catalog.requests,
            self.catalog.replies,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
        )
        self._indexed_partitions: frozenset[int] | None = None
        self.app.agent(self.source, name="orchestrate", concurrency=1)(self._orchestrate)
        self.app.timer(settings.sweep_interval, name="sweep")(self._sweep)
        setup_prometheus_sensors(self.app, "/metrics", self.metrics.registry, "faust")
        install_views(self)

    async def _orchestrate(self, stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            await self.orchestrator.handle(
                Record(
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=event.key,
                    value=event.value,
                    timestamp=message.timestamp,
                )
            )

    def owned_partitions(self) -> frozenset[int]:
        """The saga partitions this worker is the active owner of right now."""
        return frozenset(
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.catalog.requests
        )

    def is_ready(self) -> tuple[bool, str]:
        """Whether this worker holds its partitions with their state recovered, and if not, why."""
        return readiness(self.app)

    def _progress(self, owned: frozenset[int]) -> list[PartitionProgress]:
        """How recently the agent read each owned input partition, for `sweep_watermark`."""
        now, clock = time.time(), time.monotonic()
        since = self.orchestrator.owned_since
        progress = []
        for topic in (self.catalog.requests, self.catalog.replies):
            for partition in owned:
                seen = self.orchestrator.processed.get((topic, partition))
                if seen is None:  # nothing read since the takeover
                    progress.append(PartitionProgress(0.0, now - since.get(partition, now)))
                else:
                    progress.append(PartitionProgress(seen[0], clock - seen[1]))
        return progress

    def _reindex(self, owned: frozenset[int]) -> None:
        """Rebuild the in-memory indexes from the states of the partitions this worker now owns."""
        states = [s for s in self.repository.all() if self.catalog.partition_of(s.saga_id) in owned]
        before, now = self._indexed_partitions or frozenset(), time.time()
        since = self.orchestrator.owned_since
        self.orchestrator.rebuild_indexes(
            states, {p: since.get(p, now) if p in before else now for p in owned}
        )
        self._indexed_partitions = owned
        log.info("indexes_rebuilt", partitions=sorted(owned), sagas=len(states))

    async def _sweep(self) -> None:
        """Send timeouts for overdue timers of owned sagas; never writes the table (FAUST.md 1)."""
        ready, _ = self.is_ready()
        if not ready:
            return
        started = time.monotonic()
        owned = self.owned_partitions()
        if owned != self._indexed_partitions:
            self._reindex(owned)
        watermark = sweep_watermark(time.time(), self._progress(owned))
        try:
            due = await self.orchestrator.sweep(watermark, owns=owned.__contains__)
        except Exception:  # the popped timers are lost: rebuild them from the states next time
            log.exception("sweep_failed")
            self._indexed_partitions = None
            return
        self.metrics.swept(time.monotonic() - started, due)
