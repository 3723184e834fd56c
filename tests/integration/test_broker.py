"""The local broker is the real Apache Kafka: transactions, compaction, groups, durable data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import local_kafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

DEADLINE = 30.0  # seconds any single wait for the broker may take


async def create_topic(
    bootstrap: str, topic: str, partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor=1, topic_configs=configs or {})]
        )
    finally:
        await admin.close()


async def poll_until(
    consumers: list[AIOKafkaConsumer],
    done: Callable[[list[list[ConsumerRecord]]], bool],
    timeout: float = DEADLINE,
) -> list[list[ConsumerRecord]]:
    """Poll all consumers together until ``done(records per consumer)``; fail at the deadline."""
    received: list[list[ConsumerRecord]] = [[] for _ in consumers]
    deadline = time.monotonic() + timeout
    while not done(received):
        assert time.monotonic() < deadline, f"gave up after {timeout} s with {received}"
        batches = await asyncio.gather(*(c.getmany(timeout_ms=200) for c in consumers))
        for records, batch in zip(received, batches, strict=True):
            for partition_records in batch.values():
                records.extend(partition_records)
    return received


def reader(bootstrap: str, topic: str, isolation_level: str) -> AIOKafkaConsumer:
    """A group-less consumer of partition 0 of ``topic`` from its beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation_level, enable_auto_commit=False
    )
    consumer.assign([TopicPartition(topic, 0)])
    return consumer


async def read_all(consumer: AIOKafkaConsumer, last: bytes) -> list[bytes]:
    """Values from the beginning up to and including the first ``last``."""
    await consumer.start()
    try:
        await consumer.seek_to_beginning()
        records = await poll_until([consumer], lambda got: any(r.value == last for r in got[0]))
    finally:
        await consumer.stop()
    values = [r.value for r in records[0]]
    return values[: values.index(last) + 1]


async def test_read_committed_sees_committed_and_never_aborted(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A read_committed consumer gets all 1,000 committed messages and none of an aborted batch."""
    topic = unique_name("tx")
    await create_topic(kafka_bootstrap, topic)
    committed = [f"committed-{i}".encode() for i in range(1000)]
    aborted = [f"aborted-{i}".encode() for i in range(100)]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("txid"), linger_ms=5
    )
    await producer.start()
    try:
        async with producer.transaction():
            sent = [await producer.send(topic, value) for value in committed]
            await asyncio.gather(*sent)
        await producer.begin_transaction()
        sent = [await producer.send(topic, value) for value in aborted]
        await asyncio.gather(*sent)  # on the broker, not just buffered, before the abort
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"end")
    finally:
        await producer.stop()

    seen_committed = await read_all(reader(kafka_bootstrap, topic, "read_committed"), b"end")
    seen_uncommitted = await read_all(reader(kafka_bootstrap, topic, "read_uncommitted"), b"end")

    assert seen_committed == [*committed, b"end"]
    assert seen_uncommitted == [*committed, *aborted, b"end"]  # the aborted batch was written


async def test_topic_created_with_compaction_reports_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A topic created with cleanup.policy=compact has that policy in its described config."""
    topic = unique_name("compacted")
    await create_topic(kafka_bootstrap, topic, configs={"cleanup.policy": "compact"})
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()

    [resource] = responses[0].to_object()["resources"]
    assert (resource["error_code"], resource["resource_name"]) == (0, topic)
    config = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    assert config["cleanup.policy"] == "compact"


async def test_two_consumers_of_one_group_split_the_partitions(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Two consumers in one group each get a non-empty, disjoint share of all partitions."""
    topic, group = unique_name("split"), unique_name("group")
    await create_topic(kafka_bootstrap, topic, partitions=4)
    everything = {TopicPartition(topic, p) for p in range(4)}
    consumers = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            heartbeat_interval_ms=200,
        )
        for _ in range(2)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for consumer in consumers:
        await consumer.start()
    try:

        def split(_: object) -> bool:
            first, second = (c.assignment() for c in consumers)
            return bool(first and second and not first & second and first | second == everything)

        await poll_until(consumers, split)
        assignments = [c.assignment() for c in consumers]
        for p in range(4):
            await producer.send_and_wait(topic, f"to-{p}".encode(), partition=p)
        received = await poll_until(consumers, lambda got: sum(map(len, got)) >= 4)
    finally:
        await producer.stop()
        for consumer in consumers:
            await consumer.stop()

    for assignment, records in zip(assignments, received, strict=True):
        assert assignment  # each consumer has its own non-empty share ...
        assert {TopicPartition(r.topic, r.partition) for r in records} == assignment
    assert not assignments[0] & assignments[1]  # ... the shares are disjoint ...
    assert assignments[0] | assignments[1] == everything  # ... and cover every partition


@pytest.mark.timeout(240)  # starts a private broker twice, each up to BROKER_READY_TIMEOUT
async def test_restarted_broker_keeps_its_data(
    kafka_factory: Callable[..., local_kafka.LocalKafka], unique_name: Callable[[str], str]
) -> None:
    """Messages and group offsets written before a broker stops are there after it restarts."""
    kafka = await asyncio.to_thread(kafka_factory)  # a private broker: the session's one goes on
    bootstrap, topic, group = kafka.bootstrap_servers, unique_name("durable"), unique_name("group")
    partition = TopicPartition(topic, 0)
    values = [f"message-{i}".encode() for i in range(100)]
    await create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value) for value in values])
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await committer.start()
    try:
        committer.assign([partition])
        await committer.commit({partition: 60})
    finally:
        await committer.stop()

    await asyncio.to_thread(kafka.stop)
    assert kafka.running_nodes() == []
    await asyncio.to_thread(kafka.start)

    assert await read_all(reader(bootstrap, topic, "read_committed"), values[-1]) == values
    resumed = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await resumed.start()
    try:
        assert await committed_after_restart(resumed, partition) == 60
    finally:
        await resumed.stop()


async def committed_after_restart(
    consumer: AIOKafkaConsumer, partition: TopicPartition, timeout: float = 30.0
) -> int | None:
    """The group's committed offset, asked again until the restarted broker names one: right
    after a restart it once answered None (a loaded machine; its log said the group coordinator
    was not available yet). An offset really lost stays None and fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        offset: int | None = await consumer.committed(partition)
        if offset is not None or time.monotonic() > deadline:
            return offset
        await asyncio.sleep(0.2)  # polling interval while the coordinator loads
