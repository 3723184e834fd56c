"""The orchestrator as a Faust application: one table, one consumer, one timer, the web views.

Everything here is wiring. The consumer hands each record to `Orchestrator.handle`; the timer hands
the clock to `Orchestrator.sweep`; the decisions are the engine's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import structlog
from faust.types import TP
from prometheus_client import CollectorRegistry

from saga_app.admission import Admission
from saga_app.collector import collect_young, garbage_collection_paused
from saga_app.correlation import Correlator
from saga_app.kafka_io import (
    FaustPublisher,
    SagaRepository,
    derived_state_table,
    highwater,
    install_metrics,
    make_faust_app,
    readiness,
    takeover_offsets,
)
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator
from saga_app.registry import SagaRegistry
from saga_app.settings import Settings
from saga_app.state import SagaHead
from saga_app.sweeper import PartitionProgress, partition_progress, sweep_watermark
from saga_app.topology import ORCHESTRATOR_APP, SAGA_TABLE
from saga_app.web import install_views
from saga_app.web_auth import bearer_auth

log = structlog.get_logger("saga.app")

TAKEOVER_CHUNK = 1000
"""Stored sagas a takeover parses between two turns of the event loop (about 30 ms' worth)."""


class SagaWorker:
    """One orchestrator worker: the Faust app and the pieces it drives."""

    def __init__(
        self, settings: Settings, sagas: SagaRegistry, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.sagas = sagas
        self.catalog = settings.catalog
        self.app = make_faust_app(settings, ORCHESTRATOR_APP, [bearer_auth(settings)])
        self.table = derived_state_table(self.app, SAGA_TABLE, settings.partitions)
        self.repository = SagaRepository(self.table)
        self.metrics = SagaMetrics(registry)
        self.publisher = FaustPublisher(self.app)
        self.orchestrator = Orchestrator(
            catalog=self.catalog,
            sagas=sagas,
            store=self.repository,
            publisher=self.publisher,
            metrics=self.metrics,
            retention=settings.retention,
            admissions=Admission(
                settings.max_running, settings.partitions, self.catalog.partition_of
            ),
            queue_wait=settings.queue_wait,
        )
        self.source = self.app.topic(
            self.catalog.requests,
            self.catalog.replies,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
        )
        self._takeover: dict[TP, tuple[int, int]] | None = None
        """Each owned input partition's (start, end) offsets when this worker took it over;
        None until the sweeper has taken over the current assignment."""
        self._rebalances = 0
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._released)  # type: ignore[arg-type]
        self.app.consume(self.source, self.orchestrator.handle)
        self.correlator = Correlator(
            self.catalog, sagas, self.publisher, self.metrics, self.orchestrator.dead_letter
        )
        for name in sagas.domain_topics():  # one faust topic each: they may differ in partitions
            topic = self.app.topic(self.catalog.domain(name), key_type=bytes, value_type=bytes)
            self.app.consume(topic, self.correlator.handle)
        self.app.timer(settings.sweep_interval, name="sweep")(self._sweep)
        install_metrics(self.app, self.metrics.registry)
        install_views(self)

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

    async def _on_revoked(self, app: Any, revoked: set[TP], **signal: Any) -> None:
        """A rebalance began (its records are processed by now): the next takeover starts over."""
        self._rebalances += 1
        self._takeover = None
        await self._released(app)
        self.orchestrator.forget_partitions({tp.partition for tp in revoked})

    async def _released(self, app: Any, **signal: Any) -> None:
        """Log how far each partition was read when handed back (a rebalance or a clean stop),
        so the next owner's `reading_from` tells how many records it reads again."""
        read = self.orchestrator.processed
        log.info("partitions_released", read_to={f"{t}:{p}": o for (t, p), (o, _) in read.items()})

    async def _take_over(self) -> bool:
        """Index the owned sagas and note where each input partition ends, once per rebalance.

        Whatever this worker knew of these partitions may be stale: another worker may have
        moved their sagas on in between, even when the same partitions come back.
        """
        rebalances, owned = self._rebalances, self.owned_partitions()
        inputs = [TP(t, p) for t in (self.catalog.requests, self.catalog.replies) for p in owned]
        try:
            offsets = await takeover_offsets(self.app, inputs)
        except Exception as e:  # e.g. a broker down: timers wait, the next tick tries again
            log.warning("takeover_offsets_unavailable", error=repr(e))
            return False
        if rebalances != self._rebalances:
            return False  # another rebalance began meanwhile
        began = time.monotonic()
        with garbage_collection_paused():
            sagas = await self._index_stored_sagas(owned)
        if rebalances != self._rebalances:
            return False
        self._takeover = offsets
        log.info(
            "partitions_taken_over",
            partitions=sorted(owned),
            sagas=sagas,
            seconds=round(time.monotonic() - began, 3),
            reading_from={
                f"{tp.topic}:{tp.partition}": start for tp, (start, _) in offsets.items()
            },
        )
        return True

    async def _index_stored_sagas(self, owned: frozenset[int]) -> int:
        """Index the stored sagas of the `owned` partitions; how many there were.

        In chunks, letting the event loop run in between: parsing a million states takes a
        minute or more, and while the loop is blocked the worker processes no record and
        answers no request (a liveness probe would restart it). A chunk at a time, not a list
        of them all: at 200,000 sagas that list made the worker's memory 3 times larger. From
        the store's own iterator: a lookup per saga cost more than parsing it."""
        self.orchestrator.begin_takeover(owned, now=time.time())
        stored = self.repository.stored(owned, self.catalog.partition_of)
        count, rebalances = 0, self._rebalances
        while chunk := list(itertools.islice(stored, TAKEOVER_CHUNK)):
            states = [SagaHead.model_validate_json(raw) for raw in chunk]
            self.orchestrator.index_taken_over(states)
            count += len(states)
            del states  # before the pass: what is left to walk is what the indexes keep
            collect_young()
            await asyncio.sleep(0)
            if rebalances != self._rebalances:
                return 0  # the partitions moved again: the next takeover starts over
        self.orchestrator.end_takeover()
        return count

    def _progress(self, takeover: dict[TP, tuple[int, int]]) -> list[PartitionProgress]:
        """How far the agent has read each owned input partition, for `sweep_watermark`."""
        processed = self.orchestrator.processed
        return [
            partition_progress(
                processed.get((tp.topic, tp.partition)), start, max(end, highwater(self.app, tp))
            )
            for tp, (start, end) in takeover.items()
        ]

    async def _sweep(self) -> None:
        """Send timeouts for overdue timers of owned sagas; never writes the table (FAUST.md 1)."""
        ready, _ = self.is_ready()
        if not ready:
            return
        started = time.monotonic()
        if self._takeover is None and not await self._take_over():
            return
        takeover = self._takeover
        assert takeover is not None
        owned = {tp.partition for tp in takeover}
        watermark = sweep_watermark(time.time(), self._progress(takeover))
        try:
            due = await self.orchestrator.sweep(watermark, owns=owned.__contains__)
        except Exception:  # the popped timers are lost: rebuild them from the states next time
            log.exception("sweep_failed")
            self._takeover = None
            return
        self.metrics.swept(time.monotonic() - started, due)
