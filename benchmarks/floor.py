"""The floor: what bare aiokafka does with a saga's traffic on this machine (not a test).

Run `python benchmarks/floor.py [--count 2000] [--bootstrap HOST:PORT]` from the project root;
without `--bootstrap` it starts its own broker. One Python process runs the shape of a
4-step saga with nothing of the product in it (no validation, no store, no Faust):

    start -> orchestrator -> command -> participant -> reply -> orchestrator -> ... -> done

The orchestrator loop writes one record to a compacted "changelog" topic per event it
handles, as the product's table does, and only then sends the next command (the product's
outbox rule). All sagas are started at once; it prints sagas/s, messages/s and the p50/p99
saga latency. `make bench-e2e` will put the product's figures beside these.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tools")]

import local_kafka  # noqa: E402

STEPS = 4
PARTITIONS = 4


async def create_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        plain = [NewTopic(f"{prefix}{name}", PARTITIONS, 1) for name in ("in", "commands")]
        compacted = NewTopic(
            f"{prefix}changelog", PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"}
        )
        await admin.create_topics([*plain, compacted])
    finally:
        await admin.close()


async def run(bootstrap: str, count: int, rate: float | None = None) -> dict[str, float]:
    """`count` sagas, all started at once or `rate` per second."""
    prefix = f"floor-{uuid.uuid4().hex[:6]}."
    await create_topics(bootstrap, prefix)
    inbox, commands, changelog = (f"{prefix}{t}" for t in ("in", "commands", "changelog"))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await producer.start()
    orchestrator_in = AIOKafkaConsumer(
        inbox,
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}orchestrator",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    participant_in = AIOKafkaConsumer(
        commands,
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}participant",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    await orchestrator_in.start()
    await participant_in.start()
    started: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    messages = 0

    held: set[asyncio.Task[None]] = set()

    async def send_after(stored: asyncio.Future[object], key: bytes, command: bytes) -> None:
        nonlocal messages
        await stored  # the command leaves only once its state is stored (the product's rule)
        await producer.send(commands, command, key=key)
        messages += 1

    async def orchestrate() -> None:
        nonlocal messages
        async for record in orchestrator_in:
            event = json.loads(record.value)
            step = event["step"]
            state = json.dumps({"saga_id": event["saga_id"], "step": step}).encode()
            stored = await producer.send(changelog, state, key=record.key)
            messages += 1
            if step < STEPS:
                command = json.dumps({"saga_id": event["saga_id"], "step": step + 1}).encode()
                task = asyncio.create_task(send_after(stored, record.key, command))
                held.add(task)
                task.add_done_callback(held.discard)
            else:
                latencies.append(time.monotonic() - started[event["saga_id"]])
                if len(latencies) == count:
                    done.set()

    async def participate() -> None:
        nonlocal messages
        async for record in participant_in:
            command = json.loads(record.value)
            reply = {"saga_id": command["saga_id"], "step": command["step"], "ok": True}
            await producer.send(inbox, json.dumps(reply).encode(), key=record.key)
            messages += 1

    tasks = [asyncio.create_task(orchestrate()), asyncio.create_task(participate())]
    began = time.monotonic()
    for n in range(count):
        if rate is not None:  # pacing the load, not waiting for a result
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        saga_id = f"s{n}"
        started[saga_id] = time.monotonic()
        start = {"saga_id": saga_id, "step": 0}
        await producer.send(inbox, json.dumps(start).encode(), key=saga_id.encode())
        messages += 1
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.monotonic() - began
    for task in tasks:
        task.cancel()
    await orchestrator_in.stop()
    await participant_in.stop()
    await producer.stop()
    latencies.sort()
    return {
        "sagas_per_s": count / elapsed,
        "messages_per_s": messages / elapsed,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[int(len(latencies) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="sagas, all started at once")
    parser.add_argument("--runs", type=int, default=2, help="runs (this machine is noisy)")
    parser.add_argument("--bootstrap", help="an existing broker; default: start one")
    args = parser.parse_args()
    kafka = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        workdir = Path(tempfile.mkdtemp(prefix="bench-floor-"))
        kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
        kafka.up()
        bootstrap = kafka.bootstrap_servers
    try:
        for n in range(1, args.runs + 1):
            figures = asyncio.run(run(bootstrap, args.count))
            print(
                f"floor run {n}: {args.count} sagas  {figures['sagas_per_s']:7.0f} sagas/s  "
                f"{figures['messages_per_s']:7.0f} messages/s  "
                f"p50 {figures['p50_s'] * 1000:6.0f} ms  p99 {figures['p99_s'] * 1000:6.0f} ms",
                flush=True,
            )
    finally:
        if kafka is not None:
            kafka.down()


if __name__ == "__main__":
    main()
