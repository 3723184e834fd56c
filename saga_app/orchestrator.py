"""The orchestrator's driver: one Kafka record in, `decide`, the outputs out, the state stored.

Kept free of Faust so it can be tested with a dict for a store and a list for a producer; the
worker in `saga_app.app` only feeds it records (STYLE.md: thin agents, a pure engine).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol

import structlog

from saga_app.admission import Admission
from saga_app.definition import SagaDefinition
from saga_app.engine import (
    Decision,
    admission,
    decide,
    definition_missing,
    expire,
    last_event,
    outstanding_command,
)
from saga_app.errors import SagaError
from saga_app.listing import SagaListing
from saga_app.metrics import SagaMetrics
from saga_app.record import Record
from saga_app.registry import AnyDefinition, SagaRegistry
from saga_app.state import SagaHead, SagaState
from saga_app.sweeper import DeadlineIndex
from saga_app.tracked import TrackedSagaDefinition
from saga_app.tracking import announcement, track
from topics import (
    DeadLetter,
    InvalidMessage,
    ObservedEvent,
    Reply,
    SagaTimeout,
    StartSaga,
    TopicCatalog,
    parse_reply,
    parse_request,
)
from topics.messages import AbortSaga, RetrySaga

log = structlog.get_logger("saga.orchestrator")

SagaInput = StartSaga | AbortSaga | RetrySaga | SagaTimeout | Reply | ObservedEvent

ROUTINE_EVENTS = frozenset({"step_started", "step_succeeded"})
"""A decision made of these alone is logged at debug: at info a saga that goes to plan logs its
start and its end, and everything else that happens to it. A line costs the worker ~20 µs, a
third of what it spends deciding; three routine lines per saga took 4% of its time."""

_GENERATED_IDS = uuid.UUID("6f1c2a0e-8a53-4c1e-9a43-3b8f0d2b8c11")
"""Namespace of saga ids the orchestrator makes up: derived from the record, so a replay agrees."""


class SagaStore(Protocol):
    """Where saga states live: the changelogged Faust table, or a dict in tests."""

    def get(self, saga_id: str) -> SagaState | None: ...

    def put(self, state: SagaState) -> None: ...

    def delete(self, saga_id: str) -> None: ...


class Publisher(Protocol):
    """The producer, in two speeds."""

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue a message; the source record's offset is committed only once it is written."""

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a message and return once the broker has acknowledged it."""


class Orchestrator:
    """Applies records to sagas: parse, route, decide, publish, store, index timers.

    Every failure of one record ends in a dead letter, never in an exception that would make Faust
    skip the record silently (FAUST.md, point 4).

    Outputs are staged, not awaited: they leave once the states of their round of records are
    in the changelog (saga_app.staged), and the offset commit waits until the broker
    acknowledged them (saga_app.deliveries), so a crash before the commit replays the record.
    If a record read again after a takeover changes nothing (its effect was stored before the
    crash, or it no longer applies), the saga's outstanding command is sent again under its
    same message id and its state stored again (`_catch_up`).
    """

    def __init__(
        self,
        catalog: TopicCatalog,
        sagas: SagaRegistry,
        store: SagaStore,
        publisher: Publisher,
        metrics: SagaMetrics,
        deadlines: DeadlineIndex | None = None,
        listing: SagaListing | None = None,
        retention: float = 0.0,
        clock: Callable[[], float] = time.time,
        admissions: Admission | None = None,
        queue_wait: float = 60.0,
    ) -> None:
        """`retention`: seconds a finished saga is kept before it is deleted (0: forever).
        `clock` only schedules re-sent commands' timers; decisions use the records' time.
        `admissions` limits the sagas running at once (default: no limit); a start beyond it
        waits for room at most `queue_wait` seconds, then runs anyway."""
        self.catalog = catalog
        self.sagas = sagas
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.deadlines = deadlines if deadlines is not None else DeadlineIndex()
        self.listing = listing if listing is not None else SagaListing()
        self.retention = retention
        self.clock = clock
        self.admissions = admissions or Admission(0, catalog.partitions, catalog.partition_of)
        self.queue_wait = queue_wait
        self.processed: dict[tuple[str, int], tuple[int, float]] = {}
        """(topic, partition) -> (offset, timestamp) of the last record processed there since
        this worker took the partition over."""
        self.owned_since: dict[int, float] = {}
        """When this worker took each partition over: older records may be replays."""
        self._moved_in_takeover: set[str] | None = None
        """While a takeover indexes the stored sagas: the sagas records moved meanwhile."""
        self._held_in_takeover: dict[str, float] = {}
        """While a takeover indexes the stored sagas: the timers held back before it began."""

    async def handle(self, record: Record) -> None:
        """Process one record from `saga.requests` or `saga.replies`; never raises."""
        try:
            await self._handle(record)
        except (SagaError, InvalidMessage) as e:
            await self.dead_letter(record, str(e))
        except Exception as e:  # a bug must not stop every other saga on this partition
            log.exception("record_failed", topic=record.topic, offset=record.offset)
            await self.dead_letter(record, f"internal error: {type(e).__name__}: {e}")
        self.processed[(record.topic, record.partition)] = (record.offset, record.timestamp)
        if self.admissions.limited:
            await self._admit(record.partition, record.timestamp)

    async def _handle(self, record: Record) -> None:
        message = self._parse(record)
        if isinstance(message, StartSaga) and message.saga_id is None:
            await self._republish_with_id(record, message)
            return
        saga_id = message.saga_id
        assert saga_id is not None
        if record.key != self.catalog.key(saga_id):
            # The state lives on the saga's partition; a record keyed otherwise is moved there.
            await self.publisher.send(record.topic, self.catalog.key(saga_id), record.value or b"")
            return
        state = self.store.get(saga_id)
        if isinstance(message, SagaTimeout) and message.timer == "retention":
            # Needs no definition: sagas of a version no longer deployed expire too.
            decision = expire(state, message, record.timestamp, retention=self.retention)
            await self._apply(saga_id, state, message, decision)
            return
        if state is None and not isinstance(message, StartSaga | ObservedEvent):
            await self._unknown_saga(record, message, "no saga with this id exists")
            return
        definition: AnyDefinition
        if state is None:
            assert isinstance(message, StartSaga | ObservedEvent)
            definition = self.sagas.newest(message.saga_type)
        else:
            found = self.sagas.get(state.saga_type, state.version)
            if found is None:
                await self._without_definition(saga_id, state, message, record.timestamp)
                return
            definition = found
        if isinstance(definition, TrackedSagaDefinition):
            decision = track(definition, state, _tracked(message), record.timestamp)
            if decision.state is None and decision.ignored == "unknown_saga":
                reason = "a compensation event, but the tracker saw nothing else of this saga"
                await self._unknown_saga(record, message, reason)
                return
        elif isinstance(message, ObservedEvent):
            decision = Decision(state, ignored="other_saga_type")  # an orchestrated saga's id
        else:
            queue = state is None and self.admissions.must_queue(record.partition)
            decision = decide(
                definition,
                state,
                message,
                record.timestamp,
                reply_to=self.catalog.replies,
                queue_for=self.queue_wait if queue else 0.0,
            )
        await self._apply(saga_id, state, message, decision)
        if decision.ignored is not None and state is not None and self._may_be_replay(record):
            await self._catch_up(definition, state)

    async def _unknown_saga(self, record: Record, message: SagaInput, why: str) -> None:
        self.metrics.ignored(kind=_kind(message), reason="unknown_saga")
        await self.dead_letter(record, f"unknown saga {message.saga_id!r}: {why}")

    async def _without_definition(
        self, saga_id: str, state: SagaState, message: SagaInput, now: float
    ) -> None:
        """A saga whose definition version is not loaded here: fail it, naming the version."""
        loaded = self.sagas.versions(state.saga_type)
        decision = definition_missing(state, message, now, loaded=loaded)
        if decision.ignored is None:
            self.metrics.definition_missing(state.saga_type, state.version)
            log.error(
                "definition_missing",
                saga_id=saga_id,
                saga_type=state.saga_type,
                version=state.version,
                loaded=loaded,
            )
        await self._apply(saga_id, state, message, decision)

    def _parse(self, record: Record) -> SagaInput:
        if not record.value:
            raise InvalidMessage("empty message: expected a JSON object")
        if record.topic == self.catalog.replies:
            return parse_reply(record.value)
        return parse_request(record.value)

    async def _republish_with_id(self, record: Record, start: StartSaga) -> None:
        saga_id = str(
            uuid.uuid5(_GENERATED_IDS, f"{record.topic}:{record.partition}:{record.offset}")
        )
        keyed = start.model_copy(update={"saga_id": saga_id})
        await self.publisher.send(
            self.catalog.requests, self.catalog.key(saga_id), keyed.model_dump_json().encode()
        )

    async def _admit(self, partition: int, now: float) -> None:
        """Start queued sagas of `partition` while it has room, oldest first. Only here, while
        one of its records is processed: their states are stored on the record's partition."""
        try:
            while (saga_id := self.admissions.next_to_admit(partition)) is not None:
                state = self.store.get(saga_id)
                due = None if state is None else admission(state)
                definition = (
                    None if state is None else self.sagas.get(state.saga_type, state.version)
                )
                if state is None or due is None or not isinstance(definition, SagaDefinition):
                    continue  # moved on, or its timer fails it for the missing definition
                decision = decide(definition, state, due, now, reply_to=self.catalog.replies)
                await self._apply(saga_id, state, due, decision)
        except Exception:  # the sagas still queued start when their timers fall due
            log.exception("admission_failed", partition=partition)
        self.metrics.queued.set(self.admissions.queued())

    def _held_until(self, state: SagaState) -> float:
        """When the timers of a saga that has just sent the command it waits for may fire at the
        earliest: the command's whole timeout after it leaves (0: no hold). Its timer counts
        from the record that caused the command, which may have waited in this worker's
        backlog (2,000 sagas started at once on workers held to a quarter core had first
        commands sent 1.6 s after their start was produced, and time out 1.4 s after they left),
        or be read again long after (`_catch_up`)."""
        timer = state.timer
        if timer is None or timer.timer != "step":
            return 0.0
        return timer.due_at + max(0.0, self.clock() - state.updated_at)

    def _moved(self, saga_id: str) -> None:
        """The indexes know this saga's latest state: a takeover in progress leaves it be."""
        if self._moved_in_takeover is not None:
            self._moved_in_takeover.add(saga_id)

    def _may_be_replay(self, record: Record) -> bool:
        return record.timestamp < self.owned_since.get(record.partition, float("inf"))

    async def _catch_up(self, definition: AnyDefinition, state: SagaState) -> None:
        """A record read again after a takeover changes nothing, yet its first reading may have
        stored this state with its outputs and changelog record lost in a crash: send the
        outstanding command again (same message id), publish the latest transition again (chaos
        run: 9 of 5,000 sagas finished without their final event), and store the state again.
        The re-sent command gets its step's whole timeout before the step may time out: its
        first copy may never have left, and the timer may be overdue by the time the backlog is
        read."""
        event = last_event(state)
        if event is not None:
            await self.publisher.send(
                self.catalog.events,
                self.catalog.key(state.saga_id),
                event.model_dump_json().encode(),
            )
        if isinstance(definition, TrackedSagaDefinition):
            outcome = announcement(state)
            if outcome is not None:
                await self._announce(state.saga_id, outcome.model_dump_json().encode())
            self.store.put(state)
            return
        out = outstanding_command(definition, state, reply_to=self.catalog.replies)
        if out is not None:
            await self.publisher.send(
                self.catalog.commands(out.participant),
                self.catalog.key(state.saga_id),
                out.command.model_dump_json().encode(),
            )
            self.deadlines.track(
                state.saga_id, state.wakeups(self.retention), self._held_until(state)
            )
            self._moved(state.saga_id)
        self.store.put(state)

    async def _apply(
        self, saga_id: str, before: SagaState | None, message: SagaInput, decision: Decision
    ) -> None:
        if decision.ignored is not None:
            self.metrics.ignored(kind=_kind(message), reason=decision.ignored)
            log.debug("event_ignored", saga_id=saga_id, reason=decision.ignored)
        key = self.catalog.key(saga_id)
        for out in decision.commands:
            command = out.command.model_dump_json().encode()
            await self.publisher.send(self.catalog.commands(out.participant), key, command)
        for event in decision.events:
            await self.publisher.send(self.catalog.events, key, event.model_dump_json().encode())
        for outcome in decision.announcements:
            await self._announce(saga_id, outcome.model_dump_json().encode())
        if decision.delete:
            self._delete(saga_id, before)
            return
        after = decision.state
        if after is None or after is before:
            return
        self.store.put(after)
        self._moved(saga_id)
        self.admissions.update(after)
        held = self._held_until(after) if decision.commands else 0.0
        self.deadlines.track(saga_id, after.wakeups(self.retention), held)
        self.listing.update(after)
        self.metrics.observe(before, after, decision)
        if decision.events:  # one line per decision, named after its last event
            last = decision.events[-1]
            routine = all(event.event in ROUTINE_EVENTS for event in decision.events)
            (log.debug if routine else log.info)(
                last.event,
                saga_id=saga_id,
                saga_type=last.saga_type,
                step=last.step,
                attempt=last.attempt,
                status=last.status,
                events=[event.event for event in decision.events],
            )

    async def _announce(self, saga_id: str, outcome: bytes) -> None:
        await self.publisher.send(self.catalog.outcomes, self.catalog.key(saga_id), outcome)

    def _delete(self, saga_id: str, before: SagaState | None) -> None:
        self.store.delete(saga_id)
        self._moved(saga_id)
        self.admissions.forget(saga_id)
        self.deadlines.forget(saga_id)
        self.listing.forget(saga_id)
        if before is not None:
            self.metrics.expired(before)
            log.info(
                "saga_expired",
                saga_id=saga_id,
                saga_type=before.saga_type,
                status=before.status.value,
            )

    async def dead_letter(self, record: Record, reason: str) -> None:
        """Park a record we cannot process in `saga.dlq`, with the reason and its original bytes."""
        self.metrics.dead_lettered(topic=record.topic)
        log.warning("dead_lettered", topic=record.topic, offset=record.offset, reason=reason)
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_text(record.key),
            value=_text(record.value) or "",
            error=reason,
            at=record.timestamp,
        )
        await self.publisher.send(
            self.catalog.dlq, record.key or b"", letter.model_dump_json().encode()
        )

    async def sweep(self, now: float, owns: Callable[[int], bool]) -> int:
        """Send a timeout request for every timer due by `now` on a partition this worker owns.

        Only messages leave here: the agent that owns the saga decides what the timeout means.
        """
        due = [t for t in self.deadlines.pop_due(now) if owns(self.catalog.partition_of(t.saga_id))]
        await asyncio.gather(
            *(
                self.publisher.publish(
                    self.catalog.requests,
                    self.catalog.key(t.saga_id),
                    t.model_dump_json().encode(),
                )
                for t in due
            )
        )
        return len(due)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions are being revoked: what was read there no longer counts, and until the
        next takeover any record read there may be a replay."""
        gone = set(partitions)
        self.processed = {tp: seen for tp, seen in self.processed.items() if tp[1] not in gone}
        self.owned_since = {p: since for p, since in self.owned_since.items() if p not in gone}
        self.admissions.forget_partitions(gone)

    def begin_takeover(self, owned: Iterable[int], now: float) -> None:
        """This worker took partitions over at `now`: index their sagas afresh (after every
        rebalance: another worker may have moved them on meanwhile), as `index_taken_over` is
        handed them. Records are processed meanwhile; a saga they move is indexed as they leave
        it, and its stored state, read before or after, is passed over."""
        self.owned_since = dict.fromkeys(owned, now)
        self._held_in_takeover = self.deadlines.holds()  # kept for the sagas re-read below
        self.deadlines.clear()
        self.listing.clear()
        self.admissions.clear()
        self._moved_in_takeover = set()

    def index_taken_over(self, states: Iterable[SagaHead]) -> None:
        moved = self._moved_in_takeover or ()
        for state in states:
            if state.saga_id not in moved:
                held = self._held_in_takeover.get(state.saga_id, 0.0)
                self.deadlines.track(state.saga_id, state.wakeups(self.retention), held)
                self.listing.update(state)
                self.admissions.update(state)

    def end_takeover(self) -> None:
        self._moved_in_takeover = None
        self._held_in_takeover = {}
        self.admissions.order_queues()
        self.metrics.reset_in_flight(self.listing.stats()["by_status"])

    def rebuild_indexes(self, states: list[SagaState], owned: Iterable[int], now: float) -> None:
        """The whole takeover at once, for states already at hand."""
        self.begin_takeover(owned, now)
        self.index_taken_over(states)
        self.end_takeover()


def _tracked(message: SagaInput) -> StartSaga | AbortSaga | RetrySaga | SagaTimeout | ObservedEvent:
    if isinstance(message, Reply):
        raise InvalidMessage(
            f"a reply for saga {message.saga_id!r}, which is tracked: nobody sent it commands"
        )
    return message


def _kind(message: SagaInput) -> str:
    return "reply" if isinstance(message, Reply) else message.type


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")
