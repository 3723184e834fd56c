"""The consumer's own fetch loop: every record fetched is handled once, each partition's in
offset order, or read again; its offset counts for the commit only after its round's states
are acknowledged and its messages handed over. The worker's real consumer, unstarted, with a
fake consumer thread and a fake producer whose deliveries the test settles by hand."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import TP
from prometheus_client import CollectorRegistry

from saga_app.kafka_io import FETCH_MAX_WAIT_MS, install_metrics, make_faust_app
from saga_app.settings import Settings
from saga_app.staged import StagedWrites, StateNotStored
from tests.unit.test_staged import FakeProducer, settles

TOPIC = "t.saga.requests"
P0, P1, P2 = (TP(TOPIC, n) for n in range(3))


class FakeThread:
    """Faust's consumer thread as the loop uses it: aiokafka's assignment, and seeks."""

    def __init__(self) -> None:
        self.assignment = object()
        self.seeks: list[tuple[TP, int]] = []

    @property
    def _consumer(self) -> Any:
        return SimpleNamespace(
            _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=self.assignment))
        )

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def topic_partitions(self, topic: str) -> int:
        """Partitions per topic, from the cluster metadata (a table checks its changelog's)."""
        return 3


def record(tp: TP, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=1_000 * offset,
        timestamp_type=0,
        key=f"saga-{offset}".encode(),
        value=b"{}",
        checksum=None,
        serialized_key_size=8,
        serialized_value_size=2,
        headers=(),
    )


class Loop:
    """The worker's app with one consumed topic whose handler stores a state and sends a
    command per record, as the orchestrator does."""

    def __init__(self, tmp_path: Any) -> None:
        settings = Settings(data_dir=tmp_path, store="memory://", partitions=3)
        self.app = make_faust_app(settings, "loop-test")
        self.producer = FakeProducer()
        self.app.staged = StagedWrites(self.producer.send)
        self.consumer: Any = self.app.consumer
        self.thread = FakeThread()
        self.consumer._thread = self.thread
        self.consumer._active_partitions = {P0, P1, P2}
        self.handled: list[tuple[int, int]] = []
        self.app.consume(self.app.topic(TOPIC, key_type=bytes, value_type=bytes), self.handle)

    async def handle(self, message: Any) -> None:
        self.handled.append((message.partition, message.offset))
        self.app.staged.store("sagas-changelog", message.partition, message.key, b"state")
        self.app.staged.send("orders.commands", message.key, b"command")

    def process(self, batches: dict[TP, list[int]], fetched_for: Any = None) -> asyncio.Task[None]:
        """One round: what the consumer fetched, as aiokafka's records, handed to the loop."""
        records = {tp: [record(tp, n) for n in offsets] for tp, offsets in batches.items()}
        assignment = self.thread.assignment if fetched_for is None else fetched_for
        return asyncio.create_task(self.consumer._process(records, fetched_for=assignment))

    def committable(self, tp: TP) -> int | None:
        offset: int | None = self.consumer._new_offset(tp)
        return offset


@pytest.fixture
def loop(tmp_path: Any) -> Loop:
    return Loop(tmp_path)


async def test_records_are_handled_in_offset_order_and_count_once_their_round_is_flushed(
    loop: Loop,
) -> None:
    """States first, acknowledged; then the commands; only then may the offsets be committed."""
    round_ = loop.process({P0: [5, 6, 7], P1: [3]})
    assert not await settles(round_)
    assert loop.handled == [(0, 5), (0, 6), (0, 7), (1, 3)]
    assert loop.producer.topics() == ["sagas-changelog"] * 4, "a command left before its state"
    assert loop.committable(P0) is None, "committable before the round's states were stored"
    loop.producer.acknowledge()
    assert await settles(round_)
    assert loop.producer.topics() == ["sagas-changelog"] * 4 + ["orders.commands"] * 4
    assert (loop.committable(P0), loop.committable(P1)) == (8, 4)
    assert list(loop.consumer._filter_tps_with_pending_acks()) == [P0, P1]


async def test_a_batch_fetched_while_the_flow_was_stopped_is_read_again(loop: Loop) -> None:
    """A rebalance stopped the flow after the fetch: nothing is handled or dropped, the
    partition is sought back to the batch's first record."""
    loop.consumer.stop_flow()
    assert await settles(loop.process({P0: [20, 21]}))
    assert loop.handled == [] and loop.thread.seeks == [(P0, 20)]
    assert loop.committable(P0) is None


async def test_a_paused_partitions_batch_is_read_again_and_the_others_go_on(loop: Loop) -> None:
    loop.consumer.pause_partitions({P1})
    round_ = loop.process({P0: [1], P1: [9, 10]})
    await settles(round_)
    loop.producer.acknowledge()
    assert await settles(round_)
    assert loop.handled == [(0, 1)] and loop.thread.seeks == [(P1, 9)]
    assert (loop.committable(P0), loop.committable(P1)) == (2, None)


async def test_a_round_fetched_for_an_earlier_assignment_is_left_to_the_new_one(
    loop: Loop,
) -> None:
    """A rebalance came between the fetch and the round: the new assignment reads from the
    committed offsets, so the round neither handles its records nor seeks (a seek would move
    the new position past records nobody committed)."""
    earlier = loop.thread.assignment
    loop.thread.assignment = object()
    assert await settles(loop.process({P0: [4]}, fetched_for=earlier))
    assert loop.handled == [] and loop.thread.seeks == [] and loop.producer.sent == []


async def test_a_state_not_stored_stops_the_worker_and_its_round_never_counts(
    loop: Loop,
) -> None:
    fetcher = SimpleNamespace(should_stop=False)

    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        return {P0: [record(P0, 5)]}, None

    loop.consumer._wait_next_records = wait_next_records
    drain = asyncio.create_task(loop.consumer._drain_messages(fetcher))
    await settles(drain)
    loop.producer.deliveries[0].set_exception(KafkaTimeoutError())
    with pytest.raises(StateNotStored):
        await drain
    assert loop.app.crashed and loop.committable(P0) is None
    assert loop.producer.topics() == ["sagas-changelog"], "a command left without its state"


async def test_a_rebalance_waits_for_the_round_in_progress_and_commits_it(loop: Loop) -> None:
    """Faust revokes every partition: the round under way ends first, then what it processed
    is committed, so the next owner reads none of it again."""
    committed: list[int | None] = []

    async def commit(tps: Any) -> bool:
        committed.append(loop.committable(P0))
        return True

    async def app_revoked(revoked: set[TP]) -> None:
        """The app's part of the revoke (table and flow bookkeeping), not under test here."""

    loop.consumer.commit, loop.consumer._on_partitions_revoked = commit, app_revoked
    round_ = loop.process({P0: [5, 6]})
    await settles(round_)
    revoke = asyncio.create_task(loop.consumer.on_partitions_revoked({P0}))
    assert not await settles(revoke), "revoked while a round was still being flushed"
    loop.producer.acknowledge()
    assert await settles(round_) and await settles(revoke)
    assert committed == [7]
    assert loop.committable(P0) is None, "a revoked partition's offsets still counted"


async def test_a_table_write_stages_its_changelog_record_on_the_records_partition(
    loop: Loop,
) -> None:
    """The worker's real table class: `table[k] = v` writes the local store at once and stages
    the changelog record on the partition of the record being handled, as faust's agents did."""
    table = loop.app.Table("sagas", key_type=bytes, value_type=bytes, partitions=3)

    async def handle(message: Any) -> None:
        table[message.key] = b"running"
        assert table.get(message.key) == b"running"

    loop.app.handlers[TOPIC] = handle
    round_ = loop.process({P2: [4]})
    await settles(round_)
    changelog = table.changelog_topic.get_topic_name()
    assert loop.producer.sent == [(changelog, b"saga-4", b"running", 2)]


async def test_records_of_a_topic_no_handler_consumes_take_faust_own_path(loop: Loop) -> None:
    """The changelogs a recovery reads go to faust's callback, one record at a time."""
    changelog = TP("loop-test-sagas-changelog", 1)
    loop.consumer._active_partitions.add(changelog)
    seen: list[int] = []

    async def callback(message: Any) -> None:
        seen.append(message.offset)

    loop.consumer.callback = callback
    assert await settles(loop.process({changelog: [0, 1, 2]}))
    assert seen == [0, 1, 2] and loop.handled == [] and loop.committable(changelog) is None


async def test_a_recovery_writes_a_batch_at_once_and_hands_its_last_record_to_faust(
    loop: Loop,
) -> None:
    """All but the last record go to the store in one write; the last takes faust's path,
    which keeps recovery's bookkeeping, and the round waits until faust has applied it."""
    table = loop.app.Table("sagas", key_type=bytes, value_type=bytes, partitions=3)
    changelog = TP("loop-test-sagas-changelog", 1)
    loop.consumer._active_partitions.add(changelog)
    recovery: Any = loop.app.tables.recovery
    recovery.in_recovery = True
    recovery.active_tps.add(changelog)
    recovery.tp_to_table[changelog] = table
    recovery.active_offsets[changelog] = 0  # the store had record 0 already
    handed: list[Any] = []

    async def callback(message: Any) -> None:
        handed.append(message)

    loop.consumer.callback = callback
    round_ = loop.process({changelog: [0, 1, 2, 3]})
    assert not await settles(round_), "went on before faust applied the last record"
    assert [m.offset for m in handed] == [3]
    assert sorted(table.data.data) == [b"saga-1", b"saga-2"]  # 0 was in the store already
    assert recovery.active_offsets[changelog] == 2
    recovery.active_offsets[changelog] = 3  # faust's recovery task took it off its queue
    assert await settles(round_)
    assert loop.handled == [] and loop.committable(changelog) is None


async def test_the_loop_fetches_and_processes_until_its_fetcher_stops(loop: Loop) -> None:
    rounds = [{P0: [record(P0, 1), record(P0, 2)]}, {}, {P0: [record(P0, 3)]}]
    fetcher = SimpleNamespace(should_stop=False)

    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        if len(rounds) == 1:
            fetcher.should_stop = True
        loop.producer.acknowledge()
        return rounds.pop(0), None

    loop.consumer._wait_next_records = wait_next_records
    drain = asyncio.create_task(loop.consumer._drain_messages(fetcher))
    while not drain.done():
        loop.producer.acknowledge()
        await asyncio.sleep(0)  # yield to the loop; no wall-clock wait
    assert loop.handled == [(0, 1), (0, 2), (0, 3)]
    assert loop.committable(P0) == 4


async def test_records_fetched_after_a_rebalance_the_loop_waited_through_are_handled(
    loop: Loop,
) -> None:
    """The loop waits for the flow while a rebalance runs; what it fetches then belongs to the
    new assignment (chaos run: taken for the old one and dropped, a recovery stalled)."""
    fetcher = SimpleNamespace(should_stop=False)

    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        loop.thread.assignment = object()  # the rebalance, while the flow was stopped
        fetcher.should_stop = True
        return {P1: [record(P1, 0)]}, None

    loop.consumer._wait_next_records = wait_next_records
    drain = asyncio.create_task(loop.consumer._drain_messages(fetcher))
    while not drain.done():
        loop.producer.acknowledge()
        await asyncio.sleep(0)  # yield to the loop; no wall-clock wait
    assert loop.handled == [(1, 0)] and loop.committable(P1) == 1


async def test_a_handler_that_raises_stops_the_worker_and_its_round_never_counts(
    loop: Loop,
) -> None:
    """Handlers park what they cannot process; one that raises anyway is a bug. The worker stops
    (a supervisor restarts it and the round is read again) instead of going on without its
    fetch loop, holding partitions it reads nothing from."""
    fetcher = SimpleNamespace(should_stop=False)

    async def broken(message: Any) -> None:
        raise KeyError("a bug")

    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        return {P0: [record(P0, 3)]}, None

    loop.app.handlers[TOPIC] = broken
    loop.consumer._wait_next_records = wait_next_records
    with pytest.raises(KeyError):
        await loop.consumer._drain_messages(fetcher)
    assert loop.app.crashed and loop.committable(P0) is None


async def test_a_stop_during_a_round_lets_the_round_finish(loop: Loop) -> None:
    """Faust stops the fetch loop by cancelling it. Cut short, a round's command never left
    while its state stayed in the local store (CI: a saga whose first command was never sent)."""
    fetcher = SimpleNamespace(should_stop=False)

    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        fetcher.should_stop = True
        return {P0: [record(P0, 8)]}, None

    loop.consumer._wait_next_records = wait_next_records
    drain = asyncio.create_task(loop.consumer._drain_messages(fetcher))
    await settles(drain)
    drain.cancel()  # the stop, while the round waits for its state's acknowledgement
    assert not await settles(drain), "the loop stopped before its round was flushed"
    loop.producer.acknowledge()
    with pytest.raises(asyncio.CancelledError):
        await drain
    assert loop.producer.topics() == ["sagas-changelog", "orders.commands"]
    assert loop.committable(P0) == 9


async def test_faust_metrics_count_the_records_read_once_a_batch(loop: Loop) -> None:
    """`faust_messages_received_total`, per topic, and the offset read per partition say what
    the round read, though faust's per-record hook is not called."""
    registry = CollectorRegistry()
    setup_prometheus_sensors(loop.app, "/metrics", registry, "faust")
    loop.app.sensors.add(loop.app.monitor)  # as faust does when the app starts
    round_ = loop.process({P0: [5, 6, 7], P1: [3]})
    await settles(round_)
    loop.producer.acknowledge()
    assert await settles(round_)
    assert registry.get_sample_value("faust_messages_received_total") == 4
    per_topic = registry.get_sample_value(
        "faust_messages_received_per_topic_total", {"topic": TOPIC}
    )
    read_to = registry.get_sample_value(
        "faust_messages_received_per_topics_partition", {"topic": TOPIC, "partition": "0"}
    )
    assert (per_topic, read_to) == (4, 7)


async def test_the_loop_counts_its_rounds_records_and_busy_seconds_by_phase(loop: Loop) -> None:
    """`saga_loop_*`: what the loop did, and how long it handled and flushed; a round fetched
    for an earlier assignment was never processed and does not count."""
    registry = CollectorRegistry()
    install_metrics(loop.app, registry)
    round_ = loop.process({P0: [5, 6, 7], P1: [3]})
    await settles(round_)
    loop.producer.acknowledge()
    assert await settles(round_)
    assert await settles(loop.process({P2: [1]}, fetched_for=object()))

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert (sample("saga_loop_rounds_total"), sample("saga_loop_records_total")) == (1, 4)
    assert sample("saga_loop_busy_seconds_total", phase="handle")
    assert sample("saga_loop_busy_seconds_total", phase="flush")


async def test_a_fetch_waits_for_new_records_at_most_a_tenth_of_a_second(tmp_path: Any) -> None:
    """aiokafka leaves partitions with records not yet taken out of the fetch in flight, so
    records arriving there wait for it to return: faust lets the broker hold it 1.5 s."""
    app = make_faust_app(Settings(data_dir=tmp_path, store="memory://"), "fetch-wait-test")
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
    finally:
        await consumer.stop()
