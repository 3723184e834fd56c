"""What a round's Kafka requests cost a Python process, whatever it stores (not a test).

Run `make bench-round`, or `python benchmarks/round_cost.py` from the project root. Starts its
own broker and measures, with aiokafka as the worker and the participants use it, the CPU the
client process spends on

- **one fetch**, by the number of partitions the consumer is assigned: every fetch request lists
  each of them and every response carries each of them back, encoded and decoded in Python
  (aiokafka has no fetch sessions, KIP-227). A worker running the example sagas is assigned 65
  partitions: the saga topics, and the domain events its tracked sagas follow;
- **one produce request** of one record, acknowledged.

A round at moderate load is one fetch and two produce requests (the states, then the messages:
`saga_app.staged`), so these set what a round costs before any saga is decided. Measured here
(2026-12-06): a fetch costs ~0.5 ms with 1 or 16 partitions and ~1.1 ms with 65, a produce
request ~0.25 ms, so a round ~1-1.6 ms. `make bench-e2e` shows what that does per saga: at half
the maximum rate the worker spends about twice the CPU per saga it spends at the maximum, and
at 10 sagas/s about fifteen times.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import local_kafka  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from scratch import scratch_dir  # noqa: E402

TOPICS, PARTITIONS = 9, 8
"""Empty topics to assign partitions of: up to 72 partitions."""
FETCH_WAIT_MS = 5
"""How long the broker holds an empty fetch: short, so fetches follow each other quickly."""


async def fetch_cost(bootstrap: str, partitions: int, seconds: float) -> float:
    """Microseconds of CPU per fetch of a consumer assigned `partitions` empty partitions."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=FETCH_WAIT_MS, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(f"t{t}", p) for t in range(TOPICS) for p in range(PARTITIONS)]
        consumer.assign(tps[:partitions])
        fetcher = consumer._fetcher
        fetches = 0
        process_response = fetcher._proc_fetch_request

        async def counted(*args: object) -> bool:
            nonlocal fetches
            fetches += 1
            return bool(await process_response(*args))

        fetcher._proc_fetch_request = counted
        await asyncio.sleep(1.0)  # offsets looked up, fetching steadily
        fetches, cpu = 0, time.process_time()
        await asyncio.sleep(seconds)  # the fetches run meanwhile; this measures them
        return (time.process_time() - cpu) / max(fetches, 1) * 1e6
    finally:
        await consumer.stop()


async def produce_cost(bootstrap: str, requests: int) -> float:
    """Microseconds of CPU per produce request of one record, each awaited until acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await producer.start()
    try:
        for _ in range(50):
            await producer.send_and_wait("t0", b"x" * 100, partition=0)
        cpu = time.process_time()
        for _ in range(requests):
            await producer.send_and_wait("t0", b"x" * 100, partition=0)
        return (time.process_time() - cpu) / requests * 1e6
    finally:
        await producer.stop()


async def run(bootstrap: str, repeats: int, seconds: float) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"t{t}", PARTITIONS, 1) for t in range(TOPICS)])
    finally:
        await admin.close()
    for partitions in (1, 16, 65):
        costs = [await fetch_cost(bootstrap, partitions, seconds) for _ in range(repeats)]
        print(
            f"fetch, {partitions:2d} partitions assigned: "
            + ", ".join(f"{c:5.0f}" for c in costs)
            + f" µs CPU per fetch (median {statistics.median(costs):.0f})",
            flush=True,
        )
    costs = [await produce_cost(bootstrap, 500) for _ in range(repeats)]
    print(
        "produce request of one record, acknowledged: "
        + ", ".join(f"{c:5.0f}" for c in costs)
        + f" µs CPU per request (median {statistics.median(costs):.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each figure")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of fetching each")
    args = parser.parse_args()
    workdir = scratch_dir("bench-round-")
    kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
    kafka.up()
    try:
        asyncio.run(run(kafka.bootstrap_servers, args.repeats, args.seconds))
    finally:
        kafka.down()


if __name__ == "__main__":
    main()
