"""The two bridges between the orchestrator and Faust: the saga table and the producer.

Both stay bytes-in, bytes-out at the Faust boundary (FAUST.md, points 2 and 3): the table is
declared with bytes keys and values and keyed by the raw saga_id, exactly like the topics, so a
saga's state, requests and replies share one partition and web routing finds its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import structlog
from aiohttp.typedefs import Middleware
from aiokafka.errors import KafkaError
from faust.transport.drivers.aiokafka import Consumer, Producer
from faust.types import TP
from faust.types.auth import CredentialsT
from mode.utils.futures import notify

from saga_app.connection import ssl_context
from saga_app.deliveries import DeliveryFailed, PendingDeliveries
from saga_app.settings import Settings
from saga_app.state import SagaState
from saga_app.web_errors import json_errors

log = structlog.get_logger("saga.kafka")


class _CommitSafeProducer(Producer):
    """Faust's aiokafka producer, idempotent, whose flush waits for every delivery or raises.

    faust-streaming 0.15.3 turns `enable_idempotence` on only inside a transaction
    (`Producer._settings_extra`), so a retried send could write a record twice. Faust commits
    offsets right after `flush()`; here flush also settles `deliveries` (saga_app.deliveries),
    and a delivery that failed for good crashes the worker instead of being committed past.
    """

    logger = logging.getLogger(Producer.__module__)  # filtered like faust's own logs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliveries = PendingDeliveries()

    def _settings_extra(self) -> Any:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        delivery = await super().send(topic, *args, **kwargs)
        self.deliveries.track(delivery, f"a message to {topic}")
        return delivery

    async def flush(self) -> None:
        await super().flush()
        try:
            await self.deliveries.settle()
        except DeliveryFailed as e:
            log.error("stopping_worker", reason=str(e), then="restart it: it replays the rest")
            await self.app.crash(e)
            raise


class _ChangelogTrackedTable(faust.Table):  # type: ignore[type-arg]
    """A table whose changelog records count as deliveries an offset commit waits for."""

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        record = super().send_changelog(*args, **kwargs)
        producer: Any = self.app.producer  # a _CommitSafeProducer (`_SagaApp._new_producer`)
        producer.deliveries.track(record, f"a changelog record of table {self.name}")
        return record


REVOKE_COMMIT_TIMEOUT = 3.0
"""Seconds a rebalance waits for the commit of what was processed before it."""

REREAD_AFTER = 10.0
"""Seconds after which a partition whose head offset is still unprocessed is read again."""


@dataclass
class _Reread:
    """A partition sought back to `start` because the record there was never processed."""

    start: int
    seeks: int
    """The partition's seek count once the seek was done: batches fetched since start there."""
    at: float
    first: int | None = None
    """The first offset fetched after the seek: with `first > start`, no record lies between."""

    def fetched(self, seeks: int | None, offset: int) -> None:
        """A batch beginning at `offset` arrived while the partition's seek count was `seeks`."""
        if self.first is None and seeks == self.seeks:
            self.first = offset

    def resumes_at(self, offset: int) -> int:
        """Where records resume from `offset`: further on if this re-read began there and its
        first record lay beyond (nothing lies between), else `offset` itself."""
        if self.start == offset and self.first is not None and self.first > offset:
            return self.first
        return offset

    def is_old(self) -> bool:
        """Still not processed long after: the seek failed or the record was dropped again."""
        return time.monotonic() - self.at > REREAD_AFTER


class _ReadOffsets(dict[TP, int | None]):
    """Faust's per-partition read offsets, which here never drop a record.

    Faust's fetch loop drops a record below its partition's read offset, and sets that offset
    once it handed a record on. A seek back made while the loop waits to hand a record on (the
    agent's queue is full) is undone as soon as that record is in, and every record of the
    re-read below it is dropped: in chaos runs a re-read sought back every 10 s and never got
    the missing record, stalling its partition. `in_order` keeps each partition in order now.
    """

    def __getitem__(self, tp: TP) -> None:
        return None


class _SagaConsumer(Consumer):
    """Faust's aiokafka consumer, committing when a rebalance begins and leaving when stopped,
    handing the agent each partition's records in offset order, and never committing past a
    record the agent did not process.

    Faust drops the processed-but-uncommitted offsets of revoked partitions before its own
    revoke-time commit, so every rebalance replayed up to a commit interval of records on every
    partition: committing first leaves only the record in flight to be read again.

    A static member (`consumer_group_instance_id`, which lets a restarted worker take its
    partitions straight back) does not leave the group when it stops, so its partitions waited
    out the session timeout: a clean stop now leaves like a dynamic member does.
    """

    logger = logging.getLogger(Consumer.__module__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeks: dict[TP, int] = {}
        self._rereads: dict[TP, _Reread] = {}
        self._rewinds: set[asyncio.Future[Any]] = set()
        self._read_offset = _ReadOffsets()
        self._next: dict[TP, int] = {}
        """Per partition, the offset the agent processes next (else: the committed one)."""
        self._in_order: weakref.WeakSet[Any] = weakref.WeakSet()
        """The records `in_order` handed to the agent: the only ones whose acks count."""
        self._handed_on_early: set[TP] = set()
        """Partitions with records set aside before their committed offset was known."""

    def in_order(self, message: Any) -> bool:
        """Whether `message` is the next record of its partition for the agent to process.

        Faust drops records it read (see `_new_offset`). Processing the records after a dropped
        one first reorders a saga's messages: in a chaos run a participant applied a
        compensation, then the command it undid. So a record after a gap is set aside (no longer
        awaited by faust, its offset not counted) and the partition is read again from the first
        missing offset: the record set aside comes again behind it. A record before the
        expected one is a replay; the engine and the participants ignore what they have seen.

        Faust hands records on while it still awaits the committed offsets after an assignment
        (it resumes the partitions before `perform_seek`): such a record is set aside too, and
        `perform_seek` reads its partition again from the committed offset.
        """
        tp, offset = message.tp, message.offset
        expected = self._next.get(tp, self._committed_offset.get(tp))
        if expected is None:
            if not self.app.topics.acks_enabled_for(tp.topic):
                return True  # nothing committed here, nothing to keep in order
            self._set_aside(message)
            self._handed_on_early.add(tp)
            return False
        reread = self._rereads.get(tp)
        resumes = expected if reread is None else reread.resumes_at(expected)
        if offset <= resumes:
            self._no_records_between(tp, expected, offset)
            self._next[tp] = offset + 1
            self._in_order.add(message)
            return True
        self._set_aside(message)
        if reread is None or reread.start != resumes or reread.is_old():
            self._reread(tp, resumes, offset)
        return False

    def _no_records_between(self, tp: TP, start: int, end: int) -> None:
        """Count offsets a re-read found no record at (a transaction's commit marker, or the
        log start moved by retention) as processed, so the commit moves past them."""
        committed = self._committed_offset.get(tp)
        acked, index = self._acked[tp], self._acked_index[tp]
        for offset in range(start, end):
            if (committed is None or offset >= committed) and offset not in index:
                index.add(offset)
                acked.append(offset)

    def ack(self, message: Any) -> bool:
        """Count the offset of a record the agent processed in order, and of no other: faust
        also acks the records it skipped (its flow stopped for a rebalance, or a record of an
        older generation), and a commit past those would lose them."""
        if message in self._in_order:
            acked: bool = super().ack(message)
            return acked
        self._set_aside(message)
        return False

    def _set_aside(self, message: Any) -> None:
        """Faust stops waiting for `message` (a rebalance waits for every record read to be
        acked) without its offset counting for the commit: it will be read again."""
        message.acked = True
        self._unacked_messages.discard(message)
        notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        """Commit only a run of processed offsets that starts at the committed offset.

        Faust read records it then dropped: a batch fetched before a seek is still handed on
        after it, and every resume of its flow control empties the agents' queues. Faust
        commits past a gap of one offset at the head (and fills later gaps it saw while
        reading), so a start dropped so was never processed (chaos run: 1 of 5,000). Here a
        partition whose committed offset was not processed is read again from there. If the
        first record fetched then lies further on (a transaction's commit marker, or the log
        start moved by retention), nothing lies between and the commit moves past it. A
        partition never committed counts from its log start (`perform_seek`).
        """
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and committed >= 0 and min(acked) > committed:
            reread = self._rereads.get(tp)
            if reread is not None:
                self._committed_offset[tp] = committed = reread.resumes_at(committed)
            if min(acked) > committed:
                if reread is None or reread.start != committed or reread.is_old():
                    self._reread(tp, committed, min(acked))
                return None
        offset: int | None = super()._new_offset(tp)
        return offset

    def _reread(self, tp: TP, start: int, first_acked: int) -> None:
        log.warning("unprocessed_offsets", partition=str(tp), offsets=[start, first_acked - 1])
        self._rereads[tp] = _Reread(start, seeks=-1, at=time.monotonic())
        rewind = asyncio.ensure_future(self.seek(tp, start))
        self._rewinds.add(rewind)
        rewind.add_done_callback(self._rewinds.discard)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets, and a never-committed input partition to its log start.

        Faust leaves a partition nothing was committed for where the fetcher happens to be and
        records no committed offset for it, so nothing checks its first commit: records read
        but dropped (flow stopped for a rebalance, a batch cut short by a new generation) were
        committed past, and their sagas never started. From the log start, faust's seek-back
        after dropping a fetch reads them again, and `_new_offset` sees any other such gap.

        A partition whose records `in_order` set aside while its committed offset was not yet
        known is sought to it again: those records may have come from there, and the fetcher
        is past them.
        """
        await super().perform_seek()
        never_committed = [
            tp
            for tp in self.assignment()
            if self._committed_offset.get(tp) is None and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if never_committed:
            starts = await self.earliest_offsets(*never_committed)
            self._committed_offset.update(starts)
        early, self._handed_on_early = self._handed_on_early, set()
        for tp in {*never_committed, *(early & self.assignment())}:
            offset = self._committed_offset.get(tp)
            if offset is not None:
                await self.seek(tp, offset)

    async def _seek(self, partition: TP, offset: int) -> None:
        await super()._seek(partition, offset)  # aiokafka's seek: done at once, nothing between
        self._sought(partition)
        self._next[partition] = offset
        reread = self._rereads.get(partition)
        if reread is not None and reread.start == offset:
            reread.seeks = self._seeks[partition]

    async def seek_to_committed(self) -> Any:
        """Counted as a seek before and after: it awaits the broker, a batch may come between."""
        tps = self.assignment()
        for tp in tps:
            self._sought(tp)
            self._next.pop(tp, None)
        offsets = await super().seek_to_committed()
        for tp in tps:
            self._sought(tp)
        return offsets

    def _sought(self, tp: TP) -> None:
        self._seeks[tp] = self._seeks.get(tp, 0) + 1

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """aiokafka's batch, noting where each re-read begins: aiokafka returns records only
        from the current position, so a partition's first record after the re-read's seek
        is the first one at or after its start."""
        records = await super()._getmany(active_partitions, timeout)
        for tp, batch in records.items():
            reread = self._rereads.get(tp)
            if reread is not None and reread.first is None and batch:
                reread.fetched(self._seeks.get(tp), batch[0].offset)
        return records

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        """Faust's records, less those of a partition sought since their batch was fetched:
        faust hands them on after the seek, and they would pass for records read there.
        (A batch is fetched before its first record is handed on, with no await between.)"""
        seeks: dict[TP, int] | None = None
        async for tp, message in super().getmany(timeout):
            if seeks is None:
                seeks = dict(self._seeks)
            if self._seeks.get(tp, 0) == seeks.get(tp, 0):
                yield tp, message

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust takes offsets skipped while reading for compacted records and fills them in
        at the next commit; on these topics they may be records it dropped. Left unfilled,
        the commit stops there and `_new_offset` reads them again."""

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        if revoked and not self.should_stop:
            try:  # a broker down must not hold the rebalance up: then the records replay
                await asyncio.wait_for(self.commit(revoked), REVOKE_COMMIT_TIMEOUT)
            except TimeoutError:
                log.warning("revoke_commit_skipped", waited=REVOKE_COMMIT_TIMEOUT)
        self._rereads.clear()
        self._next.clear()
        await super().on_partitions_revoked(revoked)

    async def on_stop(self) -> None:
        await super().on_stop()
        consumer = self._thread._consumer
        if consumer is not None:  # aiokafka sends LeaveGroup only for a dynamic member
            consumer._coordinator._group_instance_id = None


class _SagaApp(faust.App):
    logger = logging.getLogger(faust.App.__module__)

    def _new_producer(self) -> Any:
        return _CommitSafeProducer(self.transport, loop=self.loop, beacon=self.beacon)

    def _new_consumer(self) -> Any:
        return _SagaConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.loop,
        )


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """`Settings` as Faust's `broker_credentials`; faust hands them to every aiokafka client.

    SASL with a TLS context becomes SASL_SSL, without one SASL_PLAINTEXT (faust/auth.py).
    """
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


SESSION_TIMEOUT = 6.0
"""Seconds after which the group gives a dead worker's partitions to the others (the broker's
default minimum); heartbeats go every second, so a busy worker is not mistaken for a dead one."""


def make_faust_app(
    settings: Settings, role: str, web_middlewares: Sequence[Middleware] = ()
) -> faust.App:
    """A Faust app with the settings every saga process shares; `role` names its group.

    `web_middlewares` run inside the one that answers errors in JSON (the orchestrator worker
    passes its bearer-token check there; the participants app has none).

    Static group membership (an instance id stable across restarts) lets a restarted worker take
    its partitions back at once, instead of the group waiting out the dead member's session.

    No standby replicas: under repeated rebalances faust 0.15.3's standby reading left a worker's
    store with the head of a changelog partition missing while its persisted offset said it was
    read (chaos run, 11 of 5,000 sagas gone from their new owner's table). A worker taking over
    a partition reads its changelog from its own last offset, or from the start.

    `settings.replication_factor` should be the one `ensure_topics` resolved (0 counts as 1).
    """
    return _SagaApp(
        f"{settings.topic_prefix}{role}",
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store=settings.store,
        datadir=str(settings.worker_data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=max(settings.replication_factor, 1),
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        web_tables_enabled=settings.web_tables,
        web_application_options={"middlewares": [json_errors, *web_middlewares]},
        consumer_group_instance_id=f"{role}-{settings.worker_id}",
        broker_session_timeout=SESSION_TIMEOUT,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
        producer_linger_ms=settings.producer_linger_ms,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        Table=_ChangelogTrackedTable,
        table_standby_replicas=0,
        autodiscover=False,
    )


def readiness(app: faust.App) -> tuple[bool, str]:
    """Whether a Faust app holds partitions with their tables recovered, and if not, why.

    Recovery done and no rebalance is not enough: a worker that is still joining its group
    (e.g. waiting out a dead member's session) owns nothing yet.
    """
    tables: Any = app.tables  # the concrete TableManager; its type omits `recovery`
    if not tables.recovery.completed.is_set():
        return False, "recovering table state from the changelog"
    if app.rebalancing:
        return False, "rebalancing: partitions are being reassigned"
    if not app.assignor.assigned_actives():
        return False, "no partitions assigned yet (or more workers than partitions)"
    return True, "ok"


async def takeover_offsets(app: faust.App, partitions: list[TP]) -> dict[TP, tuple[int, int]]:
    """Where the agent began reading each partition after a takeover, and where it ends now.

    Faust seeks each partition to its committed offset once the tables are recovered; with
    nothing committed yet, reading begins at the log's start.
    """
    consumer: Any = app.consumer
    ends = await consumer.highwaters(*partitions)
    earliest = await consumer.earliest_offsets(*partitions)
    committed = consumer._committed_offset  # faust's record of the last commit (no public API)
    return {tp: (committed.get(tp) or earliest[tp], ends[tp]) for tp in partitions}


def in_order(app: faust.App, message: Any) -> bool:
    """Whether an agent processes `message` now; if not, it comes again in offset order."""
    consumer: Any = app.consumer  # a _SagaConsumer (`_SagaApp._new_consumer`)
    return bool(consumer.in_order(message))


def highwater(app: faust.App, tp: TP) -> int:
    """The partition's end offset as of the consumer's last fetch from it (0 if unknown)."""
    try:
        return app.consumer.highwater(tp) or 0
    except Exception:  # not assigned any more: a rebalance began
        return 0


class SagaRepository:
    """Typed access to the saga table: `SagaState` in, JSON bytes in the changelog."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, saga_id: str) -> SagaState | None:
        raw = self.table.get(saga_id.encode())
        return None if raw is None else SagaState.model_validate_json(raw)

    def get_raw(self, saga_id: str) -> bytes | None:
        """The stored JSON itself, for views that only pass it on."""
        raw = self.table.get(saga_id.encode())
        return None if raw is None else bytes(raw)

    def put(self, state: SagaState) -> None:
        """Store a state; only ever called from the orchestrator agent (FAUST.md, point 1)."""
        self.table[state.saga_id.encode()] = state.model_dump_json().encode()

    def delete(self, saga_id: str) -> None:
        """Delete a saga: the changelog gets a tombstone, even if the key is gone already (a
        replayed deletion re-sends it). Only from the orchestrator agent (FAUST.md, point 1)."""
        with contextlib.suppress(KeyError):  # faust sends the tombstone before it looks
            del self.table[saga_id.encode()]

    def all(self) -> Iterator[SagaState]:
        """Every state in the local store; callers filter by the partitions they own."""
        for _key, raw in self.table.items():
            yield SagaState.model_validate_json(raw)


class FaustPublisher:
    """Publishes through the Faust producer.

    Messages go straight to the producer: through a faust topic, a message sent from an agent is
    attached to the current event and published only at commit, seconds later (FAUST.md, 5),
    and the channel layer costs more CPU than the rest of handling a record.
    """

    def __init__(self, app: Any, max_backoff: float = 5.0) -> None:
        self.app = app
        self.max_backoff = max_backoff
        self._topics: dict[str, Any] = {}

    def _topic(self, name: str) -> Any:
        topic = self._topics.get(name)
        if topic is None:
            topic = self.app.topic(name, key_type=bytes, value_type=bytes)
            self._topics[name] = topic
        return topic

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Hand a message to the producer without waiting for the broker (the agent's hot path).

        Safe because the producer's flush, which precedes every offset commit, waits until the
        broker acknowledged it and stops the worker if it never does (`_CommitSafeProducer`).
        """
        await self.app.producer.send(topic, key, value, None, None, None)

    @property
    def failures(self) -> int:
        """Messages the broker never acknowledged; `/health` shows the count."""
        deliveries: PendingDeliveries = self.app.producer.deliveries
        return deliveries.failures

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Send and wait for the broker's acknowledgement (sweeper and web: off the hot path)."""
        delay = 0.1
        while True:
            try:
                delivery = await self._topic(topic).send(key=key, value=value, force=True)
                await delivery
                return
            except KafkaError as e:
                if not getattr(e, "retriable", False):
                    raise
                log.warning("publish_retry", topic=topic, error=str(e), retry_in=delay)
                await asyncio.sleep(delay)  # backoff between broker retries, not a test wait
                delay = min(delay * 2, self.max_backoff)
