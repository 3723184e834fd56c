"""`make bench-takeover`: a worker taking over partitions that hold a million sagas (not a test).

Starts one broker, writes `--sagas` create_order states (waiting for their first reply, none
due for a day) straight into the saga table's changelog as the orchestrator would have, then
starts a worker with an empty store and measures, as a new owner after a failover sees it:
- recovery: until the worker is ready (faust reads the changelog into its store);
- indexing: until it logged `partitions_taken_over` (its timers and summaries built);
- how long `GET /health` took at most meanwhile: while the event loop is blocked the worker
  processes no record and answers no request (a liveness probe would restart it);
- whether it kept its partitions (a takeover logged again would show it did not);
- its resident memory once done, per saga.
Then `GET /stats` must count every saga.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "benchmarks")]

import local_kafka  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from scale import stored_states  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from services import Service, http_json  # noqa: E402

from saga_app.registry import EXAMPLES, load_sagas  # noqa: E402
from saga_app.settings import Settings  # noqa: E402
from saga_app.topology import (  # noqa: E402
    ORCHESTRATOR_APP,
    SAGA_TABLE,
    changelog,
    ensure_topics,
    worker_topics,
)
from topics import TopicCatalog  # noqa: E402

IN_FLIGHT = 1000
"""Changelog records the writer keeps unacknowledged."""


async def write_changelog(settings: Settings, count: int) -> float:
    """Store `count` sagas in the table's changelog, each on its saga's partition; seconds."""
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    topic = changelog(settings, ORCHESTRATOR_APP, SAGA_TABLE)
    states = stored_states(count, started_at=time.time() + 86400)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=20, max_batch_size=1 << 20
    )
    began = time.monotonic()
    await producer.start()
    try:
        pending = []
        for n, value in enumerate(states):
            saga_id = f"saga-{n:07d}"
            partition = catalog.partition_of(saga_id)
            pending.append(await producer.send(topic, value, catalog.key(saga_id), partition))
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending = []
            if n % 100_000 == 0:
                print(f"  written {n:,} of {count:,}", flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - began


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def takeovers(log: Path) -> list[dict[str, object]]:
    lines = (json.loads(raw) for raw in log.read_text().splitlines() if raw.startswith("{"))
    return [line for line in lines if line.get("event") == "partitions_taken_over"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1_000_000)
    args = parser.parse_args()
    workdir = scratch_dir("bench-takeover-")
    kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
    kafka.up()
    env = {"SAGA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "SAGA_TOPIC_PREFIX": "takeover."}
    settings = Settings.from_env(env)
    worker = Service("worker", env, workdir)
    try:
        asyncio.run(ensure_topics(settings, worker_topics(settings, load_sagas([EXAMPLES]))))
        print(f"{args.sagas:,} stored create_order sagas, none due; logs in {workdir}")
        wrote = asyncio.run(write_changelog(settings, args.sagas))
        print(f"  written to the changelog in {wrote:.1f} s")
        began = time.monotonic()
        worker.start().wait_ready(timeout=3600)
        recovered = time.monotonic() - began
        print(f"  recovery (until ready):         {recovered:7.1f} s")
        slowest = 0.0
        deadline = time.monotonic() + 3600
        while not takeovers(worker.log_path) and time.monotonic() < deadline:
            asked = time.monotonic()
            with contextlib.suppress(OSError):
                http_json("GET", f"{worker.url}/health", timeout=600)
            slowest = max(slowest, time.monotonic() - asked)
            time.sleep(0.2)  # a readiness probe's interval
        indexed = time.monotonic() - began
        assert worker.process is not None
        memory = rss_bytes(worker.process.pid)
        first = (takeovers(worker.log_path) or [{}])[0]
        print(
            f"  takeover done (indexes built):  {indexed:7.1f} s"
            f"   (indexing itself {first.get('seconds', 0):.1f} s)"
        )
        print(f"  slowest GET /health meanwhile:  {slowest:7.1f} s")
        time.sleep(10)  # would the group take the partitions away? wait and see
        again = takeovers(worker.log_path)[1:]
        print(f"  takeovers repeated since:       {len(again)}   (0: it kept its partitions)")
        print(
            f"  worker memory: {memory / 2**20:,.0f} MiB"
            f" ({memory / args.sagas:,.0f} bytes per saga)"
        )
        _, stats = http_json("GET", f"{worker.url}/stats")
        print(f"  GET /stats counts {stats.get('total', 0):,} sagas")
    finally:
        worker.stop()
        kafka.down()


if __name__ == "__main__":
    main()
