"""An offset commit waits for every output and changelog record, and never passes a failed one.

Faust commits right after `await app.producer.flush()` (transport/consumer.py `_commit_offsets`);
`commit` below does the same with the worker's real producer and table classes, unstarted, and
fake deliveries the test acknowledges or fails by hand.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from saga_app.deliveries import DeliveryFailed, PendingDeliveries
from saga_app.kafka_io import make_faust_app
from saga_app.settings import Settings


async def commit(app: Any, committed: list[int], offset: int) -> None:
    """Faust's commit path: flush the producer, then commit the offset."""
    await app.producer.flush()
    committed.append(offset)


async def settles(task: asyncio.Task[None]) -> bool:
    """Whether `task` finishes once the loop has run everything that is ready."""
    for _ in range(20):
        await asyncio.sleep(0)  # yield to the loop; no wall-clock wait
    return task.done()


class FakeChangelog:
    """Stands in for a table's changelog topic: `send_soon` hands back a future to settle."""

    def __init__(self) -> None:
        self.sent: list[asyncio.Future[Any]] = []

    def send_soon(self, **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(future)
        return future


@pytest.fixture
def app(tmp_path: Any) -> Any:
    return make_faust_app(Settings(data_dir=tmp_path), "deliveries-test")


async def test_commit_waits_until_every_output_is_acknowledged(app: Any) -> None:
    outputs = [asyncio.get_running_loop().create_future() for _ in range(3)]
    for n, output in enumerate(outputs):
        app.producer.deliveries.track(output, f"command {n}")
    committed: list[int] = []
    task = asyncio.create_task(commit(app, committed, 7))
    for output in outputs[:2]:
        output.set_result("acknowledged")
    assert not await settles(task), "committed while one output was unacknowledged"
    outputs[2].set_result("acknowledged")
    assert await settles(task)
    assert committed == [7]
    assert len(app.producer.deliveries) == 0


async def test_commit_waits_for_the_changelog_record_of_a_table_write(app: Any) -> None:
    table = app.Table("sagas", key_type=bytes, value_type=bytes)
    changelog = FakeChangelog()
    table._changelog_topic = changelog
    table.send_changelog(0, b"saga-1", b'{"status": "running"}')
    committed: list[int] = []
    task = asyncio.create_task(commit(app, committed, 3))
    assert not await settles(task), "committed before the saga's new state reached the changelog"
    changelog.sent[0].set_result("acknowledged")
    assert await settles(task)
    assert committed == [3]


async def test_a_failed_delivery_stops_the_commit_and_the_worker(app: Any) -> None:
    failed = asyncio.get_running_loop().create_future()
    app.producer.deliveries.track(failed, "a message to orders.commands")
    failed.set_exception(KafkaTimeoutError())
    committed: list[int] = []
    with pytest.raises(DeliveryFailed, match=r"orders\.commands"):
        await commit(app, committed, 9)
    assert committed == []
    assert app.crashed
    assert app.producer.deliveries.failures == 1


async def test_failure_is_sticky_so_no_later_commit_passes_it() -> None:
    deliveries = PendingDeliveries()
    failed = asyncio.get_running_loop().create_future()
    deliveries.track(failed, "first")
    failed.set_exception(KafkaTimeoutError())
    ok = asyncio.get_running_loop().create_future()
    ok.set_result("acknowledged")
    deliveries.track(ok, "second")
    for _ in range(2):
        with pytest.raises(DeliveryFailed, match="first"):
            await deliveries.settle()


async def test_an_unanswered_delivery_fails_after_the_timeout() -> None:
    deliveries = PendingDeliveries(timeout=0.01)
    deliveries.track(asyncio.get_running_loop().create_future(), "lost")
    with pytest.raises(DeliveryFailed, match="1 messages not acknowledged"):
        await deliveries.settle()


async def test_nothing_pending_settles_at_once() -> None:
    deliveries = PendingDeliveries()
    done = asyncio.get_running_loop().create_future()
    done.set_result("acknowledged")
    deliveries.track(done, "early")
    await deliveries.settle()
    assert len(deliveries) == 0 and deliveries.failures == 0


class FakeFetcher:
    """Stands in for faust's consumer thread: records seeks, hands out the batches it is given."""

    def __init__(self) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self.batches: list[dict[Any, list[Any]]] = []

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def getmany(self, active_partitions: Any, timeout: float) -> dict[Any, list[Any]]:
        return self.batches.pop(0)


@dataclass
class FetchedRecord:
    offset: int


def unprocessed(app: Any, committed: int, acked: list[int]) -> tuple[Any, Any, FakeFetcher]:
    """A consumer whose input partition has `committed` and the agent's `acked` offsets."""
    from faust.types import TP

    consumer, tp, fetcher = app.consumer, TP("t.saga.requests", 5), FakeFetcher()
    consumer._thread = fetcher
    app.topics._acking_topics.add(tp.topic)
    consumer._committed_offset[tp] = committed
    consumer._acked[tp] = list(acked)
    consumer._acked_index[tp] = set(acked)
    return consumer, tp, fetcher


def process(consumer: Any, tp: Any, *offsets: int) -> None:
    consumer._acked[tp] = sorted({*consumer._acked[tp], *offsets})
    consumer._acked_index[tp].update(offsets)


@pytest.mark.parametrize("acked", [[8, 9, 10], [7, 8, 9, 10]])
async def test_a_commit_never_skips_records_the_agent_did_not_process(
    app: Any, acked: list[int]
) -> None:
    """Offset 6 (and 7) was read but never processed by the agent, even when only one offset
    is missing (faust commits past that): nothing is committed past it, the partition is
    read again from 6, and the commit goes on once the agent processed it."""
    consumer, tp, fetcher = unprocessed(app, committed=6, acked=acked)
    assert consumer._new_offset(tp) is None
    await asyncio.gather(*consumer._rewinds)
    assert fetcher.seeks == [(tp, 6)]
    fetcher.batches.append({tp: [FetchedRecord(6), FetchedRecord(7)]})
    await consumer._getmany({tp}, 1.0)
    assert consumer._new_offset(tp) is None, "committed before the record at 6 was processed"
    assert fetcher.seeks == [(tp, 6)], "read again while the re-read was under way"
    process(consumer, tp, 6, 7)
    assert consumer._new_offset(tp) == 11


async def test_a_reread_that_finds_no_record_at_the_committed_offset_commits_past_it(
    app: Any,
) -> None:
    """A transaction's commit marker (or a log start moved by retention) takes the committed
    offset: the re-read's first record lies further on, so nothing lies between."""
    consumer, tp, fetcher = unprocessed(app, committed=6, acked=[7, 8])
    assert consumer._new_offset(tp) is None
    await asyncio.gather(*consumer._rewinds)
    fetcher.batches.append({tp: [FetchedRecord(7), FetchedRecord(8)]})
    await consumer._getmany({tp}, 1.0)
    assert consumer._new_offset(tp) == 9


async def test_records_fetched_before_a_seek_are_not_handed_on_after_it(app: Any) -> None:
    """Faust goes on handing out a batch after its partition was sought back: those records
    would pass for the ones read from the new position, which faust then drops as read."""
    from faust.types import TP

    consumer, tp, other = app.consumer, TP("t.saga.requests", 5), TP("t.saga.requests", 6)
    batch = {tp: [FetchedRecord(n) for n in (20, 21, 22)], other: [FetchedRecord(3)]}

    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        return batch, None

    consumer._wait_next_records = wait_next_records
    consumer._to_message = lambda tp, record: record
    consumer.highwater = lambda tp: 0
    handed_on = []
    async for partition, record in consumer.getmany(1.0):
        handed_on.append((partition, record.offset))
        if len(handed_on) == 1:
            consumer._sought(tp)
    assert handed_on == [(tp, 20), (other, 3)]


async def test_a_never_committed_input_partition_is_read_from_its_log_start(app: Any) -> None:
    """Faust leaves such a partition where the fetcher happens to be, with no committed offset
    to check its first commit against: records dropped before it were committed past. The
    input partition is sought to its log start, a changelog partition is left to recovery."""
    from faust.types import TP

    consumer = app.consumer
    requests, committed, changelog = (
        TP("t.saga.requests", 0),
        TP("t.saga.requests", 1),
        TP("t.saga-orchestrator-sagas-changelog", 0),
    )
    app.topics._acking_topics.add("t.saga.requests")
    seeks: dict[TP, int] = {}

    async def seek_to_committed() -> dict[TP, int | None]:
        return {requests: None, committed: 42, changelog: None}

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {tp: 7 for tp in tps}

    async def seek(tp: TP, offset: int) -> None:
        seeks[tp] = offset

    consumer.seek_to_committed = seek_to_committed
    consumer.earliest_offsets = earliest_offsets
    consumer.seek = seek
    consumer.assignment = lambda: {requests, committed, changelog}
    await consumer.perform_seek()
    assert seeks == {requests: 7}
    assert consumer._committed_offset[requests] == 7
    assert consumer._committed_offset[committed] == 42
    assert consumer._committed_offset[changelog] is None


def read(tp: Any, offset: int) -> Any:
    """A record of `tp` (an input topic) as faust hands it to the agent."""
    from faust.types.tuples import ConsumerMessage

    return ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)


async def test_a_record_after_a_dropped_one_waits_until_the_dropped_one_was_read_again(
    app: Any,
) -> None:
    """Faust dropped offset 7: the record at 8 is set aside, not processed before it (a saga's
    compensation would overtake its command), and the partition is read again from 7."""
    consumer, tp, fetcher = unprocessed(app, committed=6, acked=[])
    assert consumer.in_order(read(tp, 6))
    early = read(tp, 8)
    consumer._unacked_messages.add(early)
    assert not consumer.in_order(early)
    await asyncio.gather(*consumer._rewinds)
    assert fetcher.seeks == [(tp, 7)]
    assert early.acked and early not in consumer._unacked_messages, "a rebalance would wait"
    assert not consumer.in_order(read(tp, 9)), "records behind the gap wait too"
    assert fetcher.seeks == [(tp, 7)], "read again once, not once per record behind the gap"
    again = [read(tp, offset) for offset in (7, 8, 9)]
    assert all(consumer.in_order(message) for message in again)
    for message in again:
        consumer.ack(message)
    assert consumer._acked[tp] == [7, 8, 9]


async def test_a_record_faust_skipped_is_acked_without_its_offset_counting(app: Any) -> None:
    """Faust acks the records it skips (flow stopped for a rebalance, an older generation):
    counted, a commit would pass them unprocessed."""
    consumer, tp, _ = unprocessed(app, committed=6, acked=[])
    processed, skipped = read(tp, 6), read(tp, 7)
    assert consumer.in_order(processed)
    consumer._unacked_messages.add(skipped)
    assert consumer.ack(processed) and not consumer.ack(skipped)
    assert consumer._acked[tp] == [6]
    assert skipped.acked and skipped not in consumer._unacked_messages
    assert consumer._new_offset(tp) == 7


async def test_a_reread_whose_first_record_lies_further_on_goes_on_from_there(app: Any) -> None:
    """Retention moved the log start past the committed offset: the re-read's first record is
    the next one, not a record behind a gap."""
    consumer, tp, fetcher = unprocessed(app, committed=6, acked=[])
    assert not consumer.in_order(read(tp, 9))
    await asyncio.gather(*consumer._rewinds)
    fetcher.batches.append({tp: [FetchedRecord(9)]})
    await consumer._getmany({tp}, 1.0)
    assert consumer.in_order(read(tp, 9))


async def test_commits_go_past_the_commit_markers_between_transactions(app: Any) -> None:
    """A transaction's commit marker takes an offset no record is read at: the record after
    it is set aside once, the re-read finds nothing between, and the commit moves past every
    marker (CI: two gaps fought over one re-read and the commit stopped at the first)."""
    consumer, tp, fetcher = unprocessed(app, committed=5, acked=[])
    for record, marker in ((5, None), (7, 6), (9, 8)):
        if marker is not None:
            assert not consumer.in_order(read(tp, record))
            await asyncio.gather(*consumer._rewinds)
            assert fetcher.seeks[-1] == (tp, marker)
            fetcher.batches.append({tp: [FetchedRecord(record)]})
            await consumer._getmany({tp}, 1.0)
        message = read(tp, record)  # read again
        assert consumer.in_order(message)
        consumer.ack(message)
    assert consumer._new_offset(tp) == 10


async def test_a_record_handed_on_before_the_committed_offset_is_known_comes_again(
    app: Any,
) -> None:
    """After an assignment faust resumes the partitions, then awaits the committed offsets:
    records fetched meanwhile reached the agent with nothing to check them against (chaos
    run: a restarted participant applied compensations, then the commands they undid). Set
    aside, they are read again from the committed offset, which the fetcher is past."""
    from faust.types import TP

    consumer, tp, fetcher = unprocessed(app, committed=0, acked=[])
    del consumer._committed_offset[tp]
    early = read(tp, 70)
    consumer._unacked_messages.add(early)
    assert not consumer.in_order(early)
    assert early.acked and early not in consumer._unacked_messages, "a rebalance would wait"

    async def seek_to_committed() -> dict[TP, int | None]:
        return {tp: 65}

    consumer.seek_to_committed = seek_to_committed
    consumer.assignment = lambda: {tp}
    await consumer.perform_seek()
    assert fetcher.seeks == [(tp, 65)]
    assert all(consumer.in_order(read(tp, offset)) for offset in range(65, 71))


async def test_a_seek_back_made_while_a_record_is_handed_on_reads_the_records_again(
    app: Any,
) -> None:
    """Faust's fetch loop marks a partition read up to each record it handed on, and dropped
    the records of a re-read below that mark: a seek back made while the agent's queue was
    full never got the missing records (chaos runs: a partition stalled for good)."""
    consumer, tp, _ = unprocessed(app, committed=6, acked=[])
    batches = [[read(tp, 9)], [read(tp, 7), read(tp, 8), read(tp, 9)]]
    handed_on: list[int] = []
    fetcher = Stoppable()

    async def getmany(timeout: float) -> Any:
        for message in batches.pop(0) if batches else []:
            yield tp, message
        if not batches:
            fetcher._stopped.set()

    async def hand_on(message: Any) -> None:
        if message.offset == 9 and not handed_on:
            await consumer.seek(tp, 7)  # the agent found 7 and 8 missing meanwhile
        handed_on.append(message.offset)

    consumer.getmany, consumer.callback = getmany, hand_on
    await consumer._drain_messages(fetcher)
    assert handed_on == [9, 7, 8, 9]


class Stoppable:
    """Stands in for faust's Fetcher service: the fetch loop runs until it is stopped."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()
