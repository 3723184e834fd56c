"""`make demo`: a broker, a worker, the participants and the choreography services, then a batch
of sagas of both kinds with mixed outcomes: orchestrated ones, started by a command, and tracked
ones, started by the experiments service's own event and carried on by the services' events.

Prints a progress bar while the batch runs and a summary per saga type and status (count, p50 and
p99 duration, from the `saga.events` timestamps), then the dashboard URL. Stops what it started at
the end or on Ctrl-C, unless `--keep-running`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saga_app.client import SagaClient  # noqa: E402
from saga_app.collector import tune_for_records  # noqa: E402
from saga_app.connection import aiokafka_options  # noqa: E402
from saga_app.registry import EXAMPLES, load_sagas  # noqa: E402
from saga_app.settings import Settings  # noqa: E402
from saga_app.topology import ensure_topics, worker_topics  # noqa: E402
from tools.local_kafka import LocalKafka, fetch  # noqa: E402
from tools.services import Service, port_is_free  # noqa: E402

TERMINAL = {
    "saga_completed": "completed",
    "saga_compensated": "compensated",
    "saga_failed": "failed",
}

TRACKED_STARTS = {"create_experiment_choreo": ("experiments.requests", "experiment.requested")}
"""Tracked types: the topic and type of the event that begins one (its services do the rest)."""

# What each saga of the batch does: mostly success, then a failure at each step, a step that
# never answers, a flaky step, a compensation that fails once.
SCENARIOS: dict[str, list[dict[str, str]]] = {
    "create_order": [
        {},
        {},
        {},
        {},
        {},
        {"create_order": "fail"},
        {"reserve_stock": "fail"},
        {"charge_payment": "fail"},
        {"reserve_stock": "timeout"},
        {"charge_payment": "flaky:2"},
        {"charge_payment": "fail", "reserve_stock": "fail_compensation:1"},
        {"send_confirmation": "flaky:1"},
    ],
    "create_experiment": [
        {},
        {},
        {},
        {"allocate_resources": "fail"},
        {"initialize_metrics": "fail"},
        {"notify_user": "fail"},
        {"initialize_metrics": "flaky:1"},
    ],
    "create_experiment_choreo": [
        {},
        {},
        {},
        {"metrics": "fail"},
        {"resources": "fail"},
        {"notifications": "silent"},
        {"resources": "twice"},
        {"experiments": "out_of_order"},
    ],
    "create_run": [
        {},
        {},
        {},
        {"reserve_resources": "fail"},
        {"start_worker": "fail"},
        {"initialize_metrics": "timeout"},
        {"start_worker": "flaky:2"},
    ],
}


def payload_for(saga_type: str, n: int, simulate: dict[str, str]) -> dict[str, Any]:
    base: dict[str, Any]
    if saga_type == "create_order":
        base = {
            "customer_id": f"customer-{n % 50}",
            "items": [{"sku": f"sku-{n % 20}", "qty": 1}],
            "amount": 10.0,
        }
    elif saga_type in ("create_experiment", "create_experiment_choreo"):
        base = {"user_id": f"user-{n % 10}", "name": f"experiment-{n}", "resources": {"gpus": 1}}
    else:
        base = {"experiment_id": f"experiment-{n}", "config": {"lr": 0.01}, "resources": 1}
    if simulate:
        base["simulate"] = simulate
    return base


def batch(
    count: int, types: list[str], happy: bool = False
) -> list[tuple[str, str, dict[str, Any]]]:
    """`count` sagas cycling through the types and their scenarios: (saga_id, type, payload)."""
    cycles = {t: itertools.cycle([{}] if happy else SCENARIOS[t]) for t in types}
    out = []
    for n in range(count):
        saga_type = types[n % len(types)]
        out.append(
            (
                f"demo-{uuid.uuid4().hex[:12]}",
                saga_type,
                payload_for(saga_type, n, next(cycles[saga_type])),
            )
        )
    return out


class Progress:
    """A progress bar on a terminal; a line per tenth of the batch anywhere else (CI, pipes)."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total, self.width = total, width
        self.tty = sys.stdout.isatty()
        self.shown = -1

    def show(self, done: int, counts: dict[str, int]) -> None:
        step = max(1, self.total // 10)
        if done == self.shown or (not self.tty and done // step == self.shown // step):
            return
        self.shown = done
        filled = int(self.width * done / self.total) if self.total else self.width
        summary = " ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} finished  {summary}"
        )
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Outcomes:
    """What `saga.events` told of the batch's sagas: when each started, how each ended."""

    def __init__(self, wanted: dict[str, str]) -> None:
        self.wanted = wanted
        """saga_id -> saga type."""
        self.started_at: dict[str, float] = {}
        self.finished: dict[str, tuple[str, str, float]] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.timeouts = 0
        """Steps that timed out: attempts beyond what the payloads asked for, in a happy batch."""

    def note(self, event: dict[str, Any]) -> None:
        saga_id = event["saga_id"]
        if saga_id not in self.wanted:
            return
        if event["event"] == "saga_started":
            self.started_at[saga_id] = event["at"]
        self.timeouts += event["event"] == "step_timed_out"
        status = TERMINAL.get(event["event"])
        if status and saga_id not in self.finished:
            duration = event["at"] - self.started_at.get(saga_id, event["at"])
            self.finished[saga_id] = (self.wanted[saga_id], status, duration)
            self.counts[status] += 1

    def done(self) -> bool:
        return len(self.finished) == len(self.wanted)


async def run_batch(
    settings: Settings,
    sagas: list[tuple[str, str, dict[str, Any]]],
    timeout: float,
    rate: float | None = None,
) -> dict[str, tuple[str, str, float]]:
    """Start the sagas (all at once, or `rate` per second) and follow `saga.events` until each
    is finished; returns id -> (type, outcome, seconds from its start to its end).

    The collector runs as the product's processes run theirs (`tune_for_records`). With
    Python's defaults it took 2.7 s of a `bench-e2e --count 10000` run's process (0.5 s tuned),
    1.4 s of it during the 9 s of the product's burst, on the cores the product ran on."""
    tune_for_records()
    outcomes = Outcomes({saga_id: saga_type for saga_id, saga_type, _ in sagas})
    consumer = AIOKafkaConsumer(
        settings.catalog.events,
        **aiokafka_options(settings),
        auto_offset_reset="latest",
        group_id=None,
    )
    await consumer.start()
    await consumer.seek_to_end()
    wall = time.monotonic()
    progress = Progress(len(sagas))
    try:
        async with SagaClient(settings) as client:
            starting = asyncio.ensure_future(start_sagas(client, sagas, rate))
            try:
                deadline = time.monotonic() + timeout
                while not outcomes.done() and time.monotonic() < deadline:
                    fetched = await consumer.getmany(timeout_ms=500)
                    for record in itertools.chain.from_iterable(fetched.values()):
                        outcomes.note(json.loads(record.value))
                    progress.show(len(outcomes.finished), outcomes.counts)
                await starting
            finally:
                starting.cancel()
    finally:
        await consumer.stop()
    elapsed = time.monotonic() - wall
    finished = outcomes.finished
    if progress.tty:
        print()
    print(
        f"{len(finished)} of {len(sagas)} sagas finished in {elapsed:.1f}s "
        f"({len(finished) / elapsed:.1f} sagas/s, {outcomes.timeouts} steps timed out)"
    )
    return finished


async def start_sagas(
    client: SagaClient, sagas: list[tuple[str, str, dict[str, Any]]], rate: float | None
) -> None:
    """Start every saga at once, or `rate` per second."""
    if rate is None:
        await asyncio.gather(*(start_one(client, i, t, p) for i, t, p in sagas))
        return
    began = time.monotonic()
    sent: list[asyncio.Future[None]] = []
    for n, (saga_id, saga_type, payload) in enumerate(sagas):
        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))  # pacing the load
        # Not awaited one by one: waiting for each acknowledgement held the pace to ~145/s.
        sent.append(asyncio.ensure_future(start_one(client, saga_id, saga_type, payload)))
    await asyncio.gather(*sent)


async def start_one(
    client: SagaClient, saga_id: str, saga_type: str, payload: dict[str, Any]
) -> None:
    """An orchestrated saga by its command; a tracked one by the event its first service awaits."""
    if saga_type in TRACKED_STARTS:
        topic, kind = TRACKED_STARTS[saga_type]
        await client.publish(topic, {"type": kind, "saga_id": saga_id, **payload}, key=saga_id)
    else:
        await client.start(saga_type, payload, saga_id=saga_id)


def summary(finished: dict[str, tuple[str, str, float]]) -> str:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for saga_type, status, duration in finished.values():
        groups[(saga_type, status)].append(duration)
    lines = [f"{'saga type':<26}{'mode':<14}{'status':<14}{'count':>6}{'p50 s':>9}{'p99 s':>9}"]
    for (saga_type, status), durations in sorted(groups.items()):
        mode = "tracked" if saga_type in TRACKED_STARTS else "orchestrated"
        lines.append(
            f"{saga_type:<26}{mode:<14}{status:<14}{len(durations):>6}"
            f"{percentile(durations, 0.5):>9.3f}{percentile(durations, 0.99):>9.3f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=60, help="sagas to run (default 60)")
    parser.add_argument("--types", default=",".join(SCENARIOS), help="comma-separated saga types")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the batch")
    parser.add_argument(
        "--happy", action="store_true", help="only sagas that succeed (for throughput figures)"
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="leave everything up at the end"
    )
    args = parser.parse_args()
    types = [t for t in args.types.split(",") if t]
    unknown = [t for t in types if t not in SCENARIOS]
    if unknown:
        parser.error(f"unknown saga types {unknown}; known: {', '.join(SCENARIOS)}")

    port = int(os.environ.get("KAFKA_PORT", "9092"))
    fetch()
    kafka = LocalKafka(port=port)
    started_kafka = kafka.up()  # False when `make kafka-up` already runs one: leave that one up
    workdir = REPO / ".cache" / "demo"
    if started_kafka:  # a fresh cluster: local stores of an earlier one would be stale
        shutil.rmtree(workdir / "data", ignore_errors=True)
    env = kafka.client_env()  # with `make kafka-up SECURE=1` running: SASL_SSL settings too
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings, worker_topics(settings, load_sagas([EXAMPLES]))))
    worker = Service("worker", env, workdir, port=6066 if port_is_free(6066) else None)
    participants = Service("participants", env, workdir)
    choreography = Service("services", env, workdir)
    services = [worker, participants, choreography]
    try:
        print("starting a worker, the participants and the choreography services ...", flush=True)
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        print(f"running {args.count} sagas ({', '.join(types)}) with mixed outcomes")
        finished = asyncio.run(
            run_batch(settings, batch(args.count, types, args.happy), args.timeout)
        )
        print(summary(finished))
        print(f"\ndashboard: {worker.url}/   (a saga: saga status <saga_id> --url {worker.url})")
        if settings.web_token or settings.web_read_token:
            print("the worker has SAGA_WEB_TOKEN/SAGA_WEB_READ_TOKEN: the dashboard asks for it")
        print(f"logs: {', '.join(str(s.log_path) for s in services)}")
        if args.keep_running:
            pids = " ".join(str(s.process.pid) for s in services if s.process)
            print(f"still running (--keep-running): stop with `kill {pids}` and make kafka-down")
            return 0
        if sys.stdin.isatty():
            input("look at the dashboard now; press Enter (or Ctrl-C) to stop everything ")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping")
    finally:
        if not args.keep_running:
            for service in services:
                with contextlib.suppress(Exception):
                    service.stop()
            if started_kafka:
                kafka.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
