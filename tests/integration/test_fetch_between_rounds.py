"""`FetchBetweenRounds` on the real broker: the records that arrive while a round runs all
come in the next round, not one in the next and the rest in the round after."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from saga_app.kafka_io import FetchBetweenRounds
from tests.integration.test_broker import create_topic


async def test_records_that_arrive_during_a_round_all_come_in_the_next(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """b and c reach the broker one after the other while the round of a runs: the next round
    gets both. (aiokafka alone sends a fetch as soon as a is taken; b alone completes it.)"""
    topic = unique_name("between-rounds")
    await create_topic(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    consumer.assign([TopicPartition(topic, 0)])
    between_rounds = FetchBetweenRounds()

    async def next_round() -> list[bytes]:
        between_rounds.asking(consumer._fetcher)
        records = await consumer.getmany(timeout_ms=10_000)
        between_rounds.taken(records)
        return [r.value for batch in records.values() for r in batch if r.value is not None]

    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"a", partition=0)
        assert await next_round() == [b"a"]
        await producer.send_and_wait(topic, b"b", partition=0)  # the round of a runs
        await producer.send_and_wait(topic, b"c", partition=0)
        assert await next_round() == [b"b", b"c"]
    finally:
        await consumer.stop()
        await producer.stop()
