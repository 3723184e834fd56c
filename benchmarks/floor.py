"""The floor: what bare aiokafka does with a saga's traffic on this machine (not a test).

Run `python benchmarks/floor.py [--count 2000] [--bootstrap HOST:PORT]` from the project root;
without `--bootstrap` it starts its own broker. One Python process runs the shape of a
4-step saga with nothing of the product in it (no validation, no store, no Faust):

    start -> orchestrator -> command -> participant -> reply -> orchestrator -> ... -> done

The orchestrator loop writes one record to a compacted "changelog" topic per event it
handles, as the product's table does, and only then sends the next command (the product's
outbox rule). Its garbage collector runs as the product's processes run theirs
(`tune_for_records`), so that the two sides differ only in what they do with a record. All
sagas are started at once; it prints sagas/s, messages/s and the p50/p99 saga latency.
`make bench-e2e` puts the product's figures beside these; with `--worker-cores` it runs the
orchestrator loop as it runs the workers, in processes of its own, each held to a share of a
core (`run(orchestrators=N, cores=C)`).

With `--contract` it carries what the product's contract puts on the broker per saga
(`CONTRACT`): the saga state as the changelog value, two `saga.events` records per event
handled (which the load follows, as the product's load generator does), and the participants'
two changelog records per command, stored before the reply. Still no validation, no store and
no Faust: what is left between this and the product is the product's own machinery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "benchmarks")]

import local_kafka  # noqa: E402
from cpu_cap import cpu_capped  # noqa: E402
from scratch import scratch_dir  # noqa: E402

from saga_app.collector import tune_for_records  # noqa: E402

STEPS = 4
PARTITIONS = 4


@dataclass(frozen=True)
class Traffic:
    """The records a saga puts on the broker, and their sizes in bytes (0: as small as the
    floor's own JSON makes them)."""

    start: int = 0
    state: int = 0
    """The changelog record per event handled."""
    command: int = 0
    reply: int = 0
    event: int = 0
    """Each of the two `events` records per event handled (0: no events; the saga's end is
    then noted where the orchestrator handles it)."""
    dedupe: tuple[int, ...] = ()
    """The participant's changelog records per command, stored before it replies."""
    decide_us: float = 0.0
    """CPU the orchestrator loop burns per record it handles, standing in for the product's
    deciding (parse, decide, dump: `benchmarks/ceiling.py` measures it)."""
    answer_us: float = 0.0
    """CPU the participant loop burns per command, standing in for the participant runtime."""

    @property
    def messages_per_saga(self) -> int:
        events = 2 * (STEPS + 1) if self.event else 0
        return 1 + 2 * STEPS + (STEPS + 1) + events + STEPS * len(self.dedupe)


BARE = Traffic()
"""The start, a command and a reply per step, and a changelog record per event handled."""

CONTRACT = Traffic(start=215, state=2100, command=400, reply=315, event=226, dedupe=(340, 135))
"""What the product wrote per create_order saga (`make bench-e2e`, 2026-12-06, read from the
broker's log segments): 2.1 kB of state per changelog record, 10.4 events of 226 bytes, a
340-byte `answered` and a 135-byte `records` changelog record per command; 32.7 records and
18.6 kB per saga in all (the floor: 14 records, ~1 kB)."""

EVENTS = ["saga_started", *["step_started", "step_succeeded"] * STEPS, "saga_completed"]
"""The events of a saga that goes to plan, two per event the orchestrator handles."""


def events_after(step: int) -> list[str]:
    """The two events the orchestrator publishes once it has handled the input of `step` (0:
    the start)."""
    return EVENTS[2 * step : 2 * step + 2]


def burn(microseconds: float) -> None:
    """Keep this thread on the CPU for `microseconds` of its own CPU time."""
    if microseconds:
        until = time.thread_time() + microseconds / 1e6
        while time.thread_time() < until:
            pass


def padded(document: dict[str, Any], size: int) -> bytes:
    """`document` as JSON, made `size` bytes long (if shorter) by a filler field."""
    if size:
        filler = size - len(json.dumps({**document, "pad": ""}))
        if filler > 0:
            return json.dumps({**document, "pad": "x" * filler}).encode()
    return json.dumps(document).encode()


async def create_topics(bootstrap: str, prefix: str, traffic: Traffic) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = ["in", "commands", "done", *(["events"] if traffic.event else [])]
        plain = [NewTopic(f"{prefix}{name}", PARTITIONS, 1) for name in names]
        stored = ["changelog", *(f"dedupe{n}" for n in range(len(traffic.dedupe)))]
        compacted = [
            NewTopic(f"{prefix}{name}", PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})
            for name in stored
        ]
        await admin.create_topics([*plain, *compacted])
    finally:
        await admin.close()


def producer_for(bootstrap: str) -> AIOKafkaProducer:
    """Configured as the product's producers are (`Settings.producer_batch_bytes`)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=1_000_000,
    )


def consumer_for(bootstrap: str, group: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=group is not None,
    )


class Outbox:
    """Messages that leave only once the records they follow from are stored."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._held: set[asyncio.Task[None]] = set()

    def send_after(
        self, stored: list[asyncio.Future[Any]], key: bytes, messages: list[tuple[str, bytes]]
    ) -> None:
        task = asyncio.create_task(self._send_after(stored, key, messages))
        self._held.add(task)
        task.add_done_callback(self._held.discard)

    async def _send_after(
        self, stored: list[asyncio.Future[Any]], key: bytes, messages: list[tuple[str, bytes]]
    ) -> None:
        await asyncio.gather(*stored)
        for topic, value in messages:
            await self.producer.send(topic, value, key=key)


async def orchestrate(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    prefix: str,
    finished: Callable[[bytes], Awaitable[None]],
    traffic: Traffic = BARE,
) -> None:
    """The orchestrator loop: a changelog record per event, and the next command (and the
    events) only once that record is stored (the product's rule); `finished` gets the key of
    each saga's last reply, unless the saga's end is an event the load follows."""
    outbox = Outbox(producer)
    async for record in consumer:
        assert record.key is not None and record.value is not None
        event = json.loads(record.value)
        burn(traffic.decide_us)
        step, saga_id = event["step"], event["saga_id"]
        state = padded({"saga_id": saga_id, "step": step}, traffic.state)
        stored = await producer.send(f"{prefix}changelog", state, key=record.key)
        messages = [
            (f"{prefix}events", padded({"saga_id": saga_id, "event": name}, traffic.event))
            for name in (events_after(step) if traffic.event else ())
        ]
        if step < STEPS:
            command = padded({"saga_id": saga_id, "step": step + 1}, traffic.command)
            messages.append((f"{prefix}commands", command))
        if messages:
            outbox.send_after([stored], record.key, messages)
        if step == STEPS and not traffic.event:
            await finished(record.key)


async def participate(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, prefix: str, traffic: Traffic = BARE
) -> None:
    """Replies to each command: at once, or once its dedupe records (if the traffic has them)
    are stored."""
    outbox = Outbox(producer)
    async for record in consumer:
        assert record.key is not None and record.value is not None
        command = json.loads(record.value)
        burn(traffic.answer_us)
        reply = {"saga_id": command["saga_id"], "step": command["step"], "ok": True}
        answer = padded(reply, traffic.reply)
        if not traffic.dedupe:
            await producer.send(f"{prefix}in", answer, key=record.key)
            continue
        stored = [
            await producer.send(f"{prefix}dedupe{n}", padded(reply, size), key=record.key)
            for n, size in enumerate(traffic.dedupe)
        ]
        outbox.send_after(stored, record.key, [(f"{prefix}in", answer)])


class _Announced(ConsumerRebalanceListener):  # type: ignore[misc]
    """Prints each new assignment's size, for the process that waits for the group to settle."""

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[object]) -> None:
        print(f"assigned {len(assigned)}", flush=True)


async def orchestrator_process(bootstrap: str, prefix: str, traffic: Traffic) -> None:
    """The orchestrator loop alone, one of a group of such processes (`--orchestrators`): each
    saga's end goes to the `done` topic (or is an event), which the process that started it
    reads."""
    tune_for_records()
    producer = producer_for(bootstrap)
    await producer.start()
    consumer = consumer_for(bootstrap, f"{prefix}orchestrator")
    consumer.subscribe([f"{prefix}in"], listener=_Announced())
    await consumer.start()

    async def finished(key: bytes) -> None:
        await producer.send(f"{prefix}done", b"", key=key)

    await orchestrate(consumer, producer, prefix, finished, traffic)


@contextlib.asynccontextmanager
async def orchestrator_processes(
    bootstrap: str, prefix: str, count: int, cores: float, traffic: Traffic
) -> AsyncIterator[None]:
    """`count` processes of the orchestrator loop, once they share the partitions, each held to
    `cores` of a core (0: not held), as `bench-e2e --worker-cores` holds the workers."""
    argv = [__file__, "--bootstrap", bootstrap, "--orchestrator-of", prefix]
    argv += ["--traffic", json.dumps(asdict(traffic))]
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
    traffic: Traffic = BARE,
) -> dict[str, float]:
    """`count` sagas, all started at once or `rate` per second. The orchestrator loop runs in
    this process, or with `orchestrators` > 0 in that many of its own, each held to `cores`."""
    tune_for_records()
    prefix = f"floor-{uuid.uuid4().hex[:6]}."
    await create_topics(bootstrap, prefix, traffic)
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

    async def read_ends(consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            assert record.key is not None and record.value is not None
            if not traffic.event or json.loads(record.value)["event"] == "saga_completed":
                await finished(record.key)

    participant_in = consumer_for(bootstrap, f"{prefix}participant")
    participant_in.subscribe([f"{prefix}commands"])
    consumers, loops = [participant_in], [participate(participant_in, producer, prefix, traffic)]
    if not orchestrators:
        loop_in = consumer_for(bootstrap, f"{prefix}orchestrator")
        loop_in.subscribe([f"{prefix}in"])
        consumers.append(loop_in)
        loops.append(orchestrate(loop_in, producer, prefix, finished, traffic))
    if orchestrators or traffic.event:
        ends = consumer_for(bootstrap, None)
        ends.subscribe([f"{prefix}events" if traffic.event else f"{prefix}done"])
        consumers.append(ends)
        loops.append(read_ends(ends))
    for consumer in consumers:
        await consumer.start()
    tasks = [asyncio.create_task(loop) for loop in loops]
    async with contextlib.AsyncExitStack() as stack:
        if orchestrators:
            await stack.enter_async_context(
                orchestrator_processes(bootstrap, prefix, orchestrators, cores, traffic)
            )
        began = time.monotonic()
        for n in range(count):
            if rate is not None:  # pacing the load, not waiting for a result
                await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            key = f"s{n}".encode()
            started[key] = time.monotonic()
            start = padded({"saga_id": key.decode(), "step": 0}, traffic.start)
            await producer.send(f"{prefix}in", start, key=key)
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.monotonic() - began
    for task in tasks:
        task.cancel()
    for consumer in consumers:
        await consumer.stop()
    await producer.stop()
    latencies.sort()
    return {
        "sagas_per_s": count / elapsed,
        "messages_per_s": count * traffic.messages_per_saga / elapsed,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[int(len(latencies) * 0.99) - 1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="sagas, all started at once")
    parser.add_argument("--runs", type=int, default=2, help="runs (this machine is noisy)")
    parser.add_argument("--bootstrap", help="an existing broker; default: start one")
    parser.add_argument(
        "--contract", action="store_true", help="carry the product's records and bytes per saga"
    )
    parser.add_argument("--orchestrator-of", help=argparse.SUPPRESS)  # a child of `run`,
    parser.add_argument("--traffic", help=argparse.SUPPRESS)  # carrying the run's traffic
    args = parser.parse_args()
    traffic = CONTRACT if args.contract else BARE
    if args.traffic:
        given = json.loads(args.traffic)
        traffic = Traffic(**{**given, "dedupe": tuple(given["dedupe"])})
    if args.orchestrator_of:
        asyncio.run(orchestrator_process(args.bootstrap, args.orchestrator_of, traffic))
        return
    kafka = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        workdir = scratch_dir("bench-floor-")
        kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
        kafka.up()
        bootstrap = kafka.bootstrap_servers
    try:
        for n in range(1, args.runs + 1):
            figures = asyncio.run(run(bootstrap, args.count, traffic=traffic))
            label = "contract floor" if args.contract else "floor"
            print(
                f"{label} run {n}: {args.count} sagas  {figures['sagas_per_s']:7.0f} sagas/s  "
                f"{figures['messages_per_s']:7.0f} messages/s  "
                f"p50 {figures['p50_s'] * 1000:6.0f} ms  p99 {figures['p99_s'] * 1000:6.0f} ms",
                flush=True,
            )
    finally:
        if kafka is not None:
            kafka.down()


if __name__ == "__main__":
    main()
