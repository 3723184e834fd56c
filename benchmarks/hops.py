"""`make bench-hops`: where a saga's time goes at a steady load, hop by hop (not a test).

Starts one broker, a worker and the example participants (as `make bench-e2e` does), starts
create_order sagas at `--rate` per second for `--seconds`, then reads back every record they
caused and lines each saga's records up by their timestamps, which the producers stamp as they
take each record (milliseconds). For each hop it prints p50, p90 and the mean:
- worker, input -> state: from the start or reply to the saga's state record, which the worker
  writes once it has fetched the input, handed it to its loop and decided;
- worker, state -> output: the state's acknowledgement, which the command (or the last event)
  waits for (saga_app/staged.py);
- participant, command -> state and state -> reply: the same two in the participant, whose
  state is the answer it stores before it replies.
`--narrow` runs the worker with create_order only and the participants it calls only, as a
deployment of that one saga would: each then fetches fewer partitions (at 10 sagas/s, p50 32-33
ms against 41-44, and a fifth less CPU in every process).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "benchmarks")]

import local_kafka  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from demo import batch, percentile, run_batch  # noqa: E402
from e2e import running_product  # noqa: E402
from scratch import scratch_dir  # noqa: E402

from topics import TopicCatalog  # noqa: E402

PREFIX = "hops."
STATE = "sagas-changelog"
"""How the worker's state topic's name ends."""
ANSWERED = "answered-changelog"
"""How the participants' answer store's topic's name ends; its keys are message ids."""


async def read_everything(bootstrap: str, prefix: str) -> list[tuple[str, float, str]]:
    """(topic, timestamp in s, saga id) of every record in the topics of `prefix`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        *names, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        records: list[tuple[str, float, str]] = []
        fetched = await consumer.getmany(timeout_ms=1000)  # assigns every partition
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            for tp, batch_ in fetched.items():
                for r in batch_:
                    saga_id = (r.key or b"").decode(errors="replace").split(":")[0]
                    records.append((tp.topic, r.timestamp / 1000, saga_id))
            if all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                return records
            fetched = await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()


def hops(records: list[tuple[str, float, str]], sagas: set[str]) -> dict[str, list[float]]:
    """Per hop, its duration in ms for each of `sagas` that went through all four steps."""
    catalog = TopicCatalog(prefix=PREFIX)
    by_saga: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for topic, at, saga_id in records:
        if saga_id not in sagas:
            continue
        if topic.endswith(".commands"):
            kind = "command"
        elif topic.endswith(STATE):
            kind = "state"
        elif topic.endswith(ANSWERED):
            kind = "answer"
        else:
            kind = topic
        by_saga[saga_id][kind].append(at)
    found: dict[str, list[float]] = defaultdict(list)
    for seen in by_saga.values():
        starts, commands, replies = seen[catalog.requests], seen["command"], seen[catalog.replies]
        states, answers, events = seen["state"], seen["answer"], sorted(seen[catalog.events])
        if (len(starts), len(commands), len(replies), len(states), len(answers)) != (1, 4, 4, 5, 4):
            continue  # a retry or a duplicate: not the plain path this measures
        commands, replies, states, answers = map(sorted, (commands, replies, states, answers))
        inputs, outputs = [*starts, *replies], [*commands, events[-1]]
        for got, state, sent in zip(inputs, states, outputs, strict=True):
            found["worker, input -> state"].append(state - got)
            found["worker, state -> output"].append(sent - state)
        for command, answer, reply in zip(commands, answers, replies, strict=True):
            found["participant, command -> state"].append(answer - command)
            found["participant, state -> reply"].append(reply - answer)
        found["saga, start -> last event"].append(events[-1] - starts[0])
    return {hop: [d * 1000 for d in durations] for hop, durations in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="sagas started per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--narrow", action="store_true", help="create_order's processes only")
    args = parser.parse_args()
    workdir = scratch_dir("bench-hops-")
    kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
    kafka.up()
    try:
        with running_product(kafka, workdir, PREFIX, narrow=args.narrow) as (settings, _):
            asyncio.run(run_batch(settings, batch(20, ["create_order"], happy=True), 120))
            sagas = batch(int(args.rate * args.seconds), ["create_order"], happy=True)
            asyncio.run(run_batch(settings, sagas, timeout=600, rate=args.rate))
        records = asyncio.run(read_everything(kafka.bootstrap_servers, PREFIX))
    finally:
        kafka.down()
    found = hops(records, {saga_id for saga_id, _, _ in sagas})
    deployment = "create_order's processes only" if args.narrow else "all the examples"
    print(f"{args.rate:g} sagas/s for {args.seconds:g} s, {deployment}; logs in {workdir}")
    for hop, durations in found.items():
        print(
            f"{hop:<32} p50 {percentile(durations, 0.5):6.1f} ms   p90"
            f" {percentile(durations, 0.9):6.1f} ms   mean {statistics.fmean(durations):6.1f} ms"
            f"   ({len(durations)} hops)"
        )


if __name__ == "__main__":
    main()
