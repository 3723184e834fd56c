"""The bridges between the processor and Faust: the consumer's loop, the tables, the producer.

The loop hands each record of the consumed topics straight to its handler and flushes every
round of records before its offsets count (`_SagaConsumer`); faust keeps the group, the
tables' changelogs and recovery, and the web. All stay bytes-in, bytes-out at the Faust
boundary (FAUST.md, points 2 and 3): the table is declared with bytes keys and values and keyed
by the raw saga_id, exactly like the topics, so a saga's state, requests and replies share one
partition and web routing finds its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import weakref
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from functools import cached_property
from pathlib import Path
from typing import Any

import faust
import rocksdict
import structlog
from aiohttp.typedefs import Middleware
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import PrometheusMonitor, setup_prometheus_sensors
from faust.stores.base import SerializedStore
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Producer
from faust.types import TP
from faust.types.auth import CredentialsT
from prometheus_client import CollectorRegistry

from saga_app.connection import ssl_context
from saga_app.deliveries import DeliveryFailed, PendingDeliveries
from saga_app.metrics import LoopMetrics
from saga_app.record import Record
from saga_app.settings import Settings
from saga_app.staged import StagedWrites
from saga_app.state import SagaState
from saga_app.web_errors import json_errors
from topics.catalog import key_hash

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


class _BoundedRocksDB(RocksDBOptions):
    """Faust's RocksDB options, with every database of the process sharing one block cache and
    one budget for memtables unless `SAGA_STORE_MEMORY` is 0 (`StoreMemory`). faust gives each
    database (a table's partition) three 64 MiB memtables and a 2 GiB cache of its own: a
    worker that took over 1,000,000 sagas held most of them in memory (2.6 GiB; 1.5 GiB with
    the default 256 MiB), and participants keep nine tables. Every database also rolls its
    info log, and a table with faust's `ttl` option never reads a database of the other kind."""

    memory: StoreMemory | None = None
    """None: faust's memory options as they are."""

    INFO_LOG_BYTES = 1 << 20
    """Size at which RocksDB's own info log (the `LOG` file) is rolled; one old file is kept.
    It grows by every flush and compaction: 3.6 MiB per database in two minutes with a 16 MiB
    `SAGA_STORE_MEMORY`, which flushes often, and without a bound in a long-running process."""

    EXPIRING_MARK = "SAGA_EXPIRING"
    """A file in the database folder of a table whose entries expire (`ttl`): RocksDB stores
    such values with a timestamp, and reads a database of the other kind as corrupt values."""

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        """faust's open; a table given a `ttl` (faust's option, seconds; 0: never) gets a
        database of expiring entries. One written without it is set aside first, and the
        table's recovery reads it back from the changelog."""
        if self.ttl is not None and self.use_rocksdict:
            folder = Path(path)
            mark = folder / self.EXPIRING_MARK
            if folder.exists() and not mark.exists():
                log.warning("store_rebuilt", path=str(folder), reason="entries now expire")
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            mark.touch()
        return super().open(path, read_only=read_only)

    def as_options(self) -> Any:
        options = super().as_options()
        if not self.use_rocksdict:
            return options
        options.set_max_log_file_size(self.INFO_LOG_BYTES)
        options.set_keep_log_file_num(2)
        if self.memory is not None:
            table = rocksdict.BlockBasedOptions()
            table.set_bloom_filter(self.bloom_filter_size, True)
            table.set_block_cache(self.memory.cache)
            table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
            options.set_block_based_table_factory(table)
            options.set_write_buffer_manager(self.memory.memtables)
        return options


class _UnloggedRocksDB(_BoundedRocksDB):
    """The bounded options with the store's write-ahead log off, as Kafka Streams has it."""

    def open(self, path: Any, *, read_only: bool = False) -> Any:
        db = super().open(path, read_only=read_only)
        if self.use_rocksdict:
            unlogged = rocksdict.WriteOptions()
            unlogged.disable_wal = True  # type: ignore[assignment,method-assign]  # a property
            db.set_write_options(unlogged)
        return db


class StoreMemory:
    """What a process's RocksDB stores may hold in memory together: one block cache, which
    memtables are charged to as well, so `limit` bounds both (`SAGA_STORE_MEMORY`)."""

    def __init__(self, limit: int) -> None:
        self.cache = rocksdict.Cache(limit)
        self.memtables = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            limit // 2, False, self.cache
        )


class _StagedTable(faust.Table):  # type: ignore[type-arg]
    """A table whose changelog records are staged with the round of records being processed
    (saga_app.staged): written, and acknowledged, before any message of the round leaves.

    The local store is written at once, as faust does, so later records of the round read it;
    the changelog record goes to the partition of the record being processed, as faust's does.

    The RocksDB store keeps its write-ahead log, though the changelog is the source of truth:
    a participant killed after a handler ran, before the round's records reached the
    changelog, finds its answer in its own store on restart and does not run the handler
    again. With the log off (as Kafka Streams has it) a chaos run applied 3 steps twice."""

    def get(self, key: Any, default: Any = None) -> Any:
        """One read of the store's raw bytes (the tables here have bytes keys and values).
        Faust's reads a RocksDB store twice, `key in` and then the value, through its
        serializers, and counts the read in its sensors: 4.5 µs a read against 2.8."""
        value = self._read(key)
        return default if value is None else value

    def __setitem__(self, key: Any, value: Any) -> None:
        """Stage the changelog record and write the store's raw bytes; faust's write goes
        through serializers that hand bytes back as they are (4% of a participant's time)."""
        self.on_key_set(key, value)
        self._write(key, value)

    def on_key_set(self, key: Any, value: Any) -> None:
        self._staged.store(self._changelog, self.partition_for_key(key), key, value)

    def on_key_del(self, key: Any) -> None:
        self._staged.store(self._changelog, self.partition_for_key(key), key, None)

    _store_options: type[_BoundedRocksDB] = _BoundedRocksDB
    """Its RocksDB store's options (`_DerivedStateTable`'s write no log)."""

    def _new_store_by_url(self, url: Any) -> Any:
        """faust's store, whose RocksDB options share the process's memory (`StoreMemory`)."""
        store = super()._new_store_by_url(url)
        if isinstance(store, RocksDBStore):
            options = self._store_options(
                **(store.options or {}), use_rocksdict=store.use_rocksdict
            )
            app: _SagaApp = self.app  # type: ignore[assignment]
            options.memory = app.store_memory
            store.rocksdb_options = options
        return store

    @cached_property
    def _read(self) -> Callable[[bytes], bytes | None]:
        store = self.data
        return store._get if isinstance(store, SerializedStore) else store.get

    @cached_property
    def _write(self) -> Callable[[bytes, bytes], None]:
        store = self.data
        return store._set if isinstance(store, SerializedStore) else store.__setitem__

    @property
    def _staged(self) -> StagedWrites:
        app: _SagaApp = self.app  # type: ignore[assignment]
        return app.staged

    @cached_property
    def _changelog(self) -> str:
        return str(self.changelog_topic.get_topic_name())


class _DerivedStateTable(_StagedTable):
    """A staged table whose RocksDB store writes no log: for state that nothing but its own
    changelog stands behind, such as the orchestrator's sagas.

    A store that loses its newest writes in a kill -9 loses the persisted offset written
    after them too (one store per partition, one sequence of writes), so recovery reads the
    changelog from an earlier offset and writes them again; a clean stop flushes them. The
    orchestrator's outputs follow from its states and records alone, so nothing outside knows
    more than the changelog. Not for participants: their handlers act on the world, and the
    log is what stops a killed participant from acting twice (`_StagedTable`). A put of a 2 KB
    state costs 1.7 µs instead of 7.3 µs, and the worker writes each state once, not twice."""

    _store_options = _UnloggedRocksDB


def derived_state_table(app: faust.App, name: str, partitions: int) -> Any:
    """A bytes table of `app` whose store writes no log of its own (`_DerivedStateTable`)."""
    table = _DerivedStateTable(
        app,
        name=name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        beacon=app.tables.beacon,
    )
    return app.tables.add(table)


REVOKE_COMMIT_TIMEOUT = 3.0
"""Seconds a rebalance waits for the commit of what was processed before it."""

Handler = Callable[[Record], Awaitable[None]]
"""Processes one record of a consumed topic, and never raises: a record it cannot process it
parks in the dead-letter topic."""


class _Processing:
    """What faust's tables and stores take for the current event: the record being processed.
    Its `message.partition` chooses the store's partition and the changelog record's (faust
    reads `message.topic` too).

    `with _Processing(record):` makes it the current event (faust holds it by weak reference;
    the `with` keeps it alive) and puts the one before it back afterwards."""

    __slots__ = ("__weakref__", "_token", "message")

    def __init__(self, message: Record) -> None:
        self.message = message

    def __enter__(self) -> _Processing:
        self._token = _current_event.set(weakref.ref(self))  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        _current_event.reset(self._token)


class _ChangelogEvent:
    """A changelog record as faust's stores apply it: rocksdb reads the message, memory the
    event's key and value (the same bytes: tables here have raw keys and values)."""

    __slots__ = ("key", "message", "value")

    def __init__(self, message: Any) -> None:
        self.message, self.key, self.value = message, message.key, message.value


FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch that finds no new records (faust: 1,500 ms).

aiokafka keeps one fetch in flight per broker, and it leaves out the partitions whose records
were fetched but not yet taken by a round. Records that arrive on those partitions wait until
that fetch returns. With faust's 1.5 s, 10 of 38 bursts of 2,000 sagas stood still, every
process idle, for ~1.4 s (414-473 sagas/s instead of 570-840); at 100 ms, none of 35 did, and
an idle worker costs no more. At 25 ms the extra empty fetches cost more than they saved."""


class FetchBetweenRounds:
    """Holds a consumer's next fetch from the moment a round takes records until the loop asks
    for more, so that the next round gets all that reached the broker in the meantime.

    aiokafka sends the next fetch as soon as records are taken. Sent at the start of a round,
    that fetch waits at the broker for the first new record and returns with it alone; the
    records that arrive during the rest of the round wait for the round after next: at every
    hop of a saga, in the worker and in the participants. Sent when the round has ended, the
    fetch returns at once with all of them. At 600 sagas/s (4 alternated pairs of runs, each on
    a fresh broker) the saga p50 went from 261 to 126 ms and p99 from 424 to 224 ms; 2,000
    sagas at once ran as fast as before (3 pairs: 955 against 932 sagas/s)."""

    def __init__(self) -> None:
        self._held = False
        self._fetcher: Any = None

    def asking(self, fetcher: Any) -> None:
        """The loop asks `fetcher` (aiokafka's) for records: it may fetch now."""
        if fetcher is not self._fetcher:
            self._fetcher = fetcher
            self._hold(fetcher)
        if self._held:
            self._held = False
            fetcher._notify(fetcher._wait_consume_future)  # wakes its fetch task to plan again

    def taken(self, records: Mapping[Any, Any]) -> None:
        """A round took `records`: no fetch until the loop asks again."""
        self._held = bool(records)

    def _hold(self, fetcher: Any) -> None:
        plan = fetcher._get_actions_per_node  # per broker, the fetch to send and other actions

        def held_plan(assignment: Any) -> Any:
            if self._held:  # nothing to do until the loop asks; planning would visit every
                # partition (at 10 sagas/s a quarter more CPU in the fetch threads)
                return [], {}, fetcher._fetcher_timeout, False, []
            return plan(assignment)

        fetcher._get_actions_per_node = held_plan


class _SagaConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer waits at most `FETCH_MAX_WAIT_MS` for
    records (faust passes a fixed 1,500 ms) and fetches between rounds (`FetchBetweenRounds`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._between_rounds = FetchBetweenRounds()

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when it starts its fetcher
        return consumer

    async def _fetch_records(self, consumer: Any, *args: Any, **kwargs: Any) -> Any:
        self._between_rounds.asking(consumer._fetcher)
        records = await super()._fetch_records(consumer, *args, **kwargs)
        self._between_rounds.taken(records)
        return records


class _SagaConsumer(Consumer):
    """Faust's aiokafka consumer with a fetch loop of its own for the topics `consume` names.

    Faust's loop hands records one at a time through channels and streams to agents, and drops
    records on the way: a batch fetched before a seek is handed on after it, every resume of the
    flow empties the agents' queues, a record below the read offset is dropped, a skipped event
    is acked. Chaos runs lost starts to those drops and applied compensations before the
    commands they undid. Here each fetched batch goes straight to its topic's handler, one
    partition at a time in offset order; the round of batches is then flushed (its states in
    the changelog, acknowledged, before its messages leave: `StagedWrites`), and only then do
    its offsets count for the commit. Nothing read is dropped: a batch of a partition that is
    paused, or fetched while the flow was stopped, is sought back to its first record; a round
    fetched for an earlier assignment is left to the new one, which reads from the committed
    offsets. Records of other topics (the changelogs a recovery reads) take faust's own path.

    On a rebalance the round in progress ends first, then what was processed is committed:
    faust dropped the processed-but-uncommitted offsets of revoked partitions, so every
    rebalance replayed up to a commit interval of records on every partition.

    A static member (`consumer_group_instance_id`, which lets a restarted worker take its
    partitions straight back) does not leave the group when it stops, so its partitions waited
    out the session timeout: a clean stop now leaves like a dynamic member does.
    """

    logger = logging.getLogger(Consumer.__module__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._processed: dict[TP, int] = {}
        """Per input partition, the offset after the last record processed and flushed."""
        self._round = asyncio.Lock()
        """Held while a round of records is processed and flushed."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _SagaConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Fetch, process, flush, until the consumer or `fetcher` stops (faust's fetch loop)."""
        try:
            while not (self.should_stop or fetcher.should_stop):
                records, _ = await self._wait_next_records(timeout=1.0)
                if records and not self.should_stop:  # aiokafka's: of the current assignment
                    await _to_its_end(self._process(records, fetched_for=self._assignment()))
                await asyncio.sleep(0)  # a fetch can return at once, again and again
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        except Exception as e:  # a state not stored, or a bug: stop, and replay after a restart,
            # rather than hold partitions and read none of them
            log.error("stopping_worker", reason=repr(e), then="restart it: it replays the rest")
            await self.app.crash(e)
            raise

    def _assignment(self) -> Any:
        """aiokafka's assignment: a new object each rebalance, its positions reset from the
        committed offsets."""
        consumer = self._thread._consumer
        return None if consumer is None else consumer._subscription.subscription.assignment

    async def _process(self, records: Mapping[TP, list[Any]], fetched_for: Any) -> None:
        async with self._round:
            if fetched_for is None or self._assignment() is not fetched_for:
                return  # the new assignment reads these partitions from their committed offsets
            app: _SagaApp = self.app  # type: ignore[assignment]
            began = time.perf_counter()
            active = self._get_active_partitions()
            processed: dict[TP, int] = {}
            handled = 0
            for tp, batch in records.items():
                if not batch:
                    continue
                handle = app.handlers.get(tp.topic)
                if not self.flow_active or tp not in active:
                    self._thread.seek(tp, batch[0].offset)  # read again once it is resumed
                elif handle is None:  # a changelog being recovered
                    await self._recover(tp, batch)
                else:
                    await self._handle(tp, batch, handle)
                    processed[tp] = batch[-1].offset + 1
                    handled += len(batch)
            flushing = time.perf_counter()
            if processed:
                await app.staged.flush()  # raises StateNotStored: the loop stops the process
                self._processed.update(processed)
            app.loop_metrics.round(handled, flushing - began, time.perf_counter() - flushing)

    async def _recover(self, tp: TP, batch: list[Any]) -> None:
        """Apply a batch of changelog records to its table's store, in offset order.

        Faust's recovery takes records one by one through the conductor and a queue, about
        8,000 a second here: a new owner of a million sagas took two minutes to read their
        changelog. So all but the last record are written to the store at once, in one write
        batch, and the last takes faust's path, which keeps recovery's bookkeeping and decides
        when recovery is done. The next batch waits until faust has applied that one.
        """
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        table = recovery.tp_to_table.get(tp)
        recovering = table is not None and recovery.in_recovery and tp in recovery.active_tps
        *head, last = batch
        if head and recovering:
            seen = recovery.active_offsets.get(tp)
            fresh = [r for r in head if seen is None or r.offset > seen]
            if fresh:
                table.apply_changelog_batch(
                    [_ChangelogEvent(self._to_message(tp, r)) for r in fresh]
                )
                recovery.active_offsets[tp] = fresh[-1].offset
            head = []
        for record in [*head, last]:
            await self.callback(self._to_message(tp, record))
        while recovering and recovery.in_recovery and _below(recovery.active_offsets, tp, last):
            if self.should_stop or not self.flow_active:
                return
            await asyncio.sleep(0)  # faust's recovery task takes the record off its queue
        recovery.flush_buffers()  # applied before the next batch's records

    async def _handle(self, tp: TP, batch: list[Any], handle: Handler) -> None:
        topic, partition = tp
        for r in batch:
            record = Record(topic, partition, r.offset, r.key, r.value, r.timestamp / 1000)
            with _Processing(record):
                await handle(record)
        _count_read(self.app.sensors, tp, len(batch), batch[-1].offset)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        """The partitions with processed records, for faust's commit."""
        return (
            tp
            for tp in list(self._processed)
            if topics is None or tp in topics or tp.topic in topics
        )

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: after the last record processed and flushed."""
        return self._processed.get(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        async with self._round:
            if revoked and not self.should_stop:
                try:  # a broker down must not hold the rebalance up: then the records replay
                    await asyncio.wait_for(self.commit(revoked), REVOKE_COMMIT_TIMEOUT)
                except TimeoutError:
                    log.warning("revoke_commit_skipped", waited=REVOKE_COMMIT_TIMEOUT)
            for tp in revoked:
                self._processed.pop(tp, None)
            await super().on_partitions_revoked(revoked)

    async def on_stop(self) -> None:
        await super().on_stop()
        consumer = self._thread._consumer
        if consumer is not None:  # aiokafka sends LeaveGroup only for a dynamic member
            consumer._coordinator._group_instance_id = None


def _count_read(sensors: Iterable[Any], tp: TP, records: int, last_offset: int) -> None:
    """What faust's monitors count of the records read (`faust_messages_received_total`, per
    topic, the offset read per partition), once a batch: faust's per-record hook cost the
    worker 4% of its time. Faust's count of messages "active" is left out: nothing here ever
    marked one done, so it only grew."""
    for sensor in sensors:
        if isinstance(sensor, Monitor):
            sensor.messages_received_total += records
            sensor.messages_received_by_topic[tp.topic] += records
            sensor.tp_read_offsets[tp] = last_offset
        if isinstance(sensor, PrometheusMonitor):
            metrics = sensor._metrics
            metrics.messages_received.inc(records)
            metrics.messages_received_per_topics.labels(topic=tp.topic).inc(records)
            metrics.messages_received_per_topics_partition.labels(
                topic=tp.topic, partition=tp.partition
            ).set(last_offset)


def _below(offsets: Mapping[TP, int | None], tp: TP, record: Any) -> bool:
    """Whether recovery has not yet applied `record` of `tp`."""
    seen = offsets.get(tp)
    return seen is None or seen < record.offset


async def _to_its_end(round_: Coroutine[Any, Any, None]) -> None:
    """Run a round to its end even if the loop is cancelled meanwhile (a clean stop).

    Cut short, a round's states may be in the local store but not in the changelog, and the
    messages it held back never leave: in CI a worker stopped mid-round left a saga whose
    first command was never sent. A round ends within the state timeout (`STATE_TIMEOUT`).
    """
    task = asyncio.ensure_future(round_)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class _SagaApp(faust.App):
    """Faust's app whose consumer hands the records of the topics `consume` names straight to
    their handlers, with one `StagedWrites` for its tables' changelog records and messages."""

    logger = logging.getLogger(faust.App.__module__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.staged = StagedWrites(self._send_batch, on_stored=self._persisted)
        self.handlers: dict[str, Handler] = {}
        self.loop_metrics = LoopMetrics(CollectorRegistry())
        """How busy the fetch loop is; `install_metrics` puts it on the app's `/metrics`."""
        self.store_memory: StoreMemory | None = None
        """What the tables' RocksDB stores may hold in memory together (`make_faust_app`)."""

    def consume(self, topic: Any, handle: Handler) -> None:
        """Subscribe to `topic` (a faust topic, of one or more names): `handle` gets its records
        one by one, each partition's in offset order (`_SagaConsumer`)."""
        self.topics.add(topic)
        for name in topic.topics:
            self.handlers[name] = handle

    async def _send_batch(
        self, topic: str, partition: int | None, records: list[tuple[bytes, bytes | None]]
    ) -> list[Awaitable[tuple[TP, int]]]:
        """Hand `records` to aiokafka as whole batches, one per partition (each record to its
        key's partition when `partition` is None, as the producer's partitioner would), in
        order. Record by record, faust's and aiokafka's send (metadata, partitioner,
        accumulator, a future each) and the tracking of each delivery cost a quarter of the
        worker's CPU per saga (1.34 -> 1.03 ms) and a third of the participants' (0.55 ->
        0.35 ms); a batch is built in C and tracked once. Each delivery gives the partition
        and the offset of its batch's last record."""
        producer = self.producer._ensure_producer()  # type: ignore[attr-defined]
        if partition is None:
            await producer.client._wait_on_metadata(topic)
            partitions = sorted(producer.client.cluster.partitions_for_topic(topic))
            by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
            for record in records:
                chosen = remembered_partitioner(record[0], partitions, partitions)
                by_partition.setdefault(chosen, []).append(record)
        else:
            by_partition = {partition: records}
        deliveries: list[Awaitable[tuple[TP, int]]] = []
        for chosen, chunk in by_partition.items():
            batch, count = producer.create_batch(), 0
            for key, value in chunk:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    deliveries.append(await self._submit(producer, batch, count, topic, chosen))
                    batch, count = producer.create_batch(), 0
                    # an empty batch takes its first record whatever its size: none is dropped
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
            deliveries.append(await self._submit(producer, batch, count, topic, chosen))
        return deliveries

    async def _submit(
        self, producer: Any, batch: Any, count: int, topic: str, partition: int
    ) -> asyncio.Future[tuple[TP, int]]:
        """Send one batch with aiokafka's `producer`; the commit waits for it (`deliveries`)."""
        sent = await producer.send_batch(batch, topic, partition=partition)
        deliveries: PendingDeliveries = self.producer.deliveries  # type: ignore[attr-defined]
        deliveries.track(sent, f"{count} messages to {topic}")
        return _last_offset(sent, TP(topic, partition), count)

    def _persisted(self, acks: Sequence[tuple[TP, int]]) -> None:
        """Note in each table's store how far its changelog is written, as faust does after a
        changelog send: a restarted worker with rocksdb then reads the changelog from there."""
        last = dict(acks)
        tables = {t.changelog_topic.get_topic_name(): t for t in self.tables.values()}
        for tp, offset in last.items():
            tables[tp.topic].data.set_persisted_offset(tp, offset)

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


def _last_offset(sent: asyncio.Future[Any], tp: TP, count: int) -> asyncio.Future[tuple[TP, int]]:
    """The partition and offset of a batch's last record, once the broker has written it. A
    future, not a coroutine: nobody awaits the deliveries of messages (the commit waits for
    them through `PendingDeliveries`), and their failure is reported there."""
    last: asyncio.Future[tuple[TP, int]] = sent.get_loop().create_future()

    def settle(done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            last.cancel()
        elif (error := done.exception()) is not None:
            last.set_exception(error)
        else:
            last.set_result((tp, done.result().offset + count - 1))

    sent.add_done_callback(settle)
    last.add_done_callback(_retrieved)
    return last


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (asyncio logs the unseen ones)."""
    if not future.cancelled():
        future.exception()


def remembered_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """Kafka's default partitioner, as aiokafka's, with each key's hash remembered (`key_hash`):
    the producer hashes the key of every record that has no partition set."""
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[key_hash(key) % len(all_partitions)]


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


RECOVERY_FETCH_BYTES = 8 * 1024**2
"""Bytes one fetch may bring per partition. A new owner reads each changelog partition whole:
faust's 1 MiB kept recovery waiting on fetches, 200,000 sagas in 24.7 s; this takes 14.8 s."""

SESSION_TIMEOUT = 6.0
"""Seconds after which the group gives a dead worker's partitions to the others (the broker's
default minimum); heartbeats go every second, so a busy worker is not mistaken for a dead one."""


def make_faust_app(
    settings: Settings, role: str, web_middlewares: Sequence[Middleware] = ()
) -> _SagaApp:
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
    app = _SagaApp(
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
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_partitioner=remembered_partitioner,
        broker_max_poll_records=settings.round_records or None,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=RECOVERY_FETCH_BYTES,
        key_serializer="raw",
        value_serializer="raw",
        Table=_StagedTable,
        table_standby_replicas=0,
        autodiscover=False,
    )
    if settings.store_memory:
        app.store_memory = StoreMemory(settings.store_memory)
    return app


def install_metrics(app: _SagaApp, registry: CollectorRegistry) -> None:
    """`GET /metrics` of `app`: what `registry` holds, faust's sensors (`faust_*`), and how
    busy the fetch loop is (`LoopMetrics`)."""
    app.loop_metrics = LoopMetrics(registry)
    setup_prometheus_sensors(app, "/metrics", registry, "faust")


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

    def stored(
        self, partitions: Collection[int], partition_of: Callable[[str], int]
    ) -> Iterator[bytes]:
        """The stored JSON of every saga of `partitions` in the local store (`partition_of`
        tells a saga id's partition). The takeover reads them while records are processed:
        a RocksDB iterator reads a snapshot, so writes meanwhile are harmless; the memory
        store's dict would fail under them, so it is copied first (its values are in memory
        already). RocksDB keeps a database per partition, read straight: hashing each saga id
        to find its partition cost a takeover a tenth of its time (murmur2 in Python)."""
        data = self.table.data
        if isinstance(data, RocksDBStore):
            for partition in partitions:
                db = data._dbs.get(partition)
                if db is not None:
                    yield from (raw for _, raw in data._visible_items(db))
            return
        for key, raw in list(data.items()):
            if partition_of(key.decode()) in partitions:
                yield raw


class FaustPublisher:
    """Publishes through the Faust producer, in two speeds.

    `send` (the handlers) stages a message with the round of records being processed: it leaves
    once the round's states are stored. `publish` (the sweeper and the web views, outside any
    round) sends at once and waits for the broker's acknowledgement.
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
        """Stage a message with the round of records being processed (the handlers' hot path):
        it leaves once the round's states are stored (`_SagaConsumer`), and the offset commit
        waits until the broker acknowledged it (`_CommitSafeProducer`)."""
        app: _SagaApp = self.app
        app.staged.send(topic, key, value)

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
