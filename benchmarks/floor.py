"""The floor: what bare aiokafka does with a saga's traffic on this machine (not a test).

Run `python benchmarks/floor.py [--count 2000] [--bootstrap HOST:PORT]` from the project root;
without `--bootstrap` it starts its own broker. One Python process runs the shape of a
4-step saga with nothing of the product in it (no validation, no store, no Faust):

    start -> orchestrator -> command -> participant -> reply -> orchestrator -> ... -> done

The orchestrator loop writes one record to a compacted "changelog" topic per event it
handles, as the product's table does, and only then sends the next command (the product's
outbox rule). All sagas are started at once; it prints sagas/s, messages/s and the p50/p99
saga latency. `make bench-e2e` puts the product's figures beside these; with `--worker-cores`
it runs the orchestrator loop as it runs the workers, in processes of its own, each held to a
share of a core (`run(orchestrators=N, cores=C)`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "benchmarks")]

import local_kafka  # noqa: E402
from cpu_cap import cpu_capped  # noqa: E402

STEPS = 4
PARTITIONS = 4
MESSAGES_PER_SAGA = 1 + 2 * STEPS + (STEPS + 1)
"""The start, a command and a reply per step, and a changelog record per event handled."""


async def create_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        plain = [NewTopic(f"{prefix}{name}", PARTITIONS, 1) for name in ("in", "commands", "done")]
        compacted = NewTopic(
            f"{prefix}changelog", PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"}
        )
        await admin.create_topics([*plain, compacted])
    finally:
        await admin.close()


def producer_for(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )


def consumer_for(bootstrap: str, group: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=group is not None,
    )


async def orchestrate(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    prefix: str,
    finished: Callable[[bytes], Awaitable[None]],
) -> None:
    """The orchestrator loop: a changelog record per event, and the next command only once that
    record is stored (the product's rule); `finished` gets the key of each saga's last reply."""
    held: set[asyncio.Task[None]] = set()

    async def send_after(stored: asyncio.Future[object], key: bytes, command: bytes) -> None:
        await stored
        await producer.send(f"{prefix}commands", command, key=key)

    async for record in consumer:
        assert record.key is not None and record.value is not None
        event = json.loads(record.value)
        step = event["step"]
        state = json.dumps({"saga_id": event["saga_id"], "step": step}).encode()
        stored = await producer.send(f"{prefix}changelog", state, key=record.key)
        if step < STEPS:
            command = json.dumps({"saga_id": event["saga_id"], "step": step + 1}).encode()
            task = asyncio.create_task(send_after(stored, record.key, command))
            held.add(task)
            task.add_done_callback(held.discard)
        else:
            await finished(record.key)


async def participate(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, prefix: str) -> None:
    async for record in consumer:
        assert record.value is not None
        command = json.loads(record.value)
        reply = {"saga_id": command["saga_id"], "step": command["step"], "ok": True}
        await producer.send(f"{prefix}in", json.dumps(reply).encode(), key=record.key)


class _Announced(ConsumerRebalanceListener):  # type: ignore[misc]
    """Prints each new assignment's size, for the process that waits for the group to settle."""

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[object]) -> None:
        print(f"assigned {len(assigned)}", flush=True)


async def orchestrator_process(bootstrap: str, prefix: str) -> None:
    """The orchestrator loop alone, one of a group of such processes (`--orchestrators`): each
    saga's end goes to the `done` topic, which the process that started it reads."""
    producer = producer_for(bootstrap)
    await producer.start()
    consumer = consumer_for(bootstrap, f"{prefix}orchestrator")
    consumer.subscribe([f"{prefix}in"], listener=_Announced())
    await consumer.start()

    async def finished(key: bytes) -> None:
        await producer.send(f"{prefix}done", b"", key=key)

    await orchestrate(consumer, producer, prefix, finished)


@contextlib.asynccontextmanager
async def orchestrator_processes(
    bootstrap: str, prefix: str, count: int, cores: float
) -> AsyncIterator[None]:
    """`count` processes of the orchestrator loop, once they share the partitions, each held to
    `cores` of a core (0: not held), as `bench-e2e --worker-cores` holds the workers."""
    argv = [__file__, "--bootstrap", bootstrap, "--orchestrator-of", prefix]
    children = [
        await asyncio.create_subprocess_exec(sys.executable, *argv, stdout=PIPE)
        for _ in range(count)
    ]
    try:
        await _sharing(children)
        with contextlib.ExitStack() as capped:
            for n, child in enumerate(children, 1):
                if cores:
                    capped.enter_context(cpu_capped(f"{prefix}orchestrator{n}", child.pid, cores))
            yield
    finally:
        for child in children:
            child.terminate()
            await child.wait()


async def _sharing(children: list[Process], timeout: float = 60.0) -> None:
    """Until every child holds some partitions and together they hold them all."""
    latest = [0] * len(children)

    async def follow(n: int, child: Process) -> None:
        assert child.stdout is not None
        while line := await child.stdout.readline():
            latest[n] = int(line.split()[-1])

    readers = [asyncio.create_task(follow(n, child)) for n, child in enumerate(children)]
    deadline = time.monotonic() + timeout
    try:
        while not (all(latest) and sum(latest) == PARTITIONS):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the floor's orchestrators never shared the partitions: {latest}"
                )
            await asyncio.sleep(0.05)  # polling the children's reports, with a deadline
    finally:
        for reader in readers:
            reader.cancel()


async def run(
    bootstrap: str,
    count: int,
    rate: float | None = None,
    orchestrators: int = 0,
    cores: float = 0.0,
) -> dict[str, float]:
    """`count` sagas, all started at once or `rate` per second. The orchestrator loop runs in
    this process, or with `orchestrators` > 0 in that many of its own, each held to `cores`."""
    prefix = f"floor-{uuid.uuid4().hex[:6]}."
    await create_topics(bootstrap, prefix)
    producer = producer_for(bootstrap)
    await producer.start()
    started: dict[bytes, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def finished(key: bytes) -> None:
        sent_at = started.pop(key, None)  # None: a saga's end read again after a rebalance
        if sent_at is not None:
            latencies.append(time.monotonic() - sent_at)
        if len(latencies) == count:
            done.set()

    async def read_done(consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            assert record.key is not None
            await finished(record.key)

    participant_in = consumer_for(bootstrap, f"{prefix}participant")
    participant_in.subscribe([f"{prefix}commands"])
    if orchestrators:
        loop_in = consumer_for(bootstrap, None)
        loop_in.subscribe([f"{prefix}done"])
        loop = read_done(loop_in)
    else:
        loop_in = consumer_for(bootstrap, f"{prefix}orchestrator")
        loop_in.subscribe([f"{prefix}in"])
        loop = orchestrate(loop_in, producer, prefix, finished)
    await participant_in.start()
    await loop_in.start()
    tasks = [
        asyncio.create_task(loop),
        asyncio.create_task(participate(participant_in, producer, prefix)),
    ]
    async with contextlib.AsyncExitStack() as stack:
        if orchestrators:
            await stack.enter_async_context(
                orchestrator_processes(bootstrap, prefix, orchestrators, cores)
            )
        began = time.monotonic()
        for n in range(count):
            if rate is not None:  # pacing the load, not waiting for a result
                await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            key = f"s{n}".encode()
            started[key] = time.monotonic()
            start = {"saga_id": key.decode(), "step": 0}
            await producer.send(f"{prefix}in", json.dumps(start).encode(), key=key)
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.monotonic() - began
    for task in tasks:
        task.cancel()
    await loop_in.stop()
    await participant_in.stop()
    await producer.stop()
    latencies.sort()
    return {
        "sagas_per_s": count / elapsed,
        "messages_per_s": count * MESSAGES_PER_SAGA / elapsed,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[int(len(latencies) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="sagas, all started at once")
    parser.add_argument("--runs", type=int, default=2, help="runs (this machine is noisy)")
    parser.add_argument("--bootstrap", help="an existing broker; default: start one")
    parser.add_argument("--orchestrator-of", help=argparse.SUPPRESS)  # a child of `run`
    args = parser.parse_args()
    if args.orchestrator_of:
        asyncio.run(orchestrator_process(args.bootstrap, args.orchestrator_of))
        return
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
