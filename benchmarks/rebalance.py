"""What a rebalance costs: records read again, and how long sagas wait for a new owner (not a test).

Run `make bench-rebalance`, or `python benchmarks/rebalance.py [--rate 40]` from the project root.
Starts its own broker, the participants and two workers on it, keeps `create_order` sagas coming
at a steady rate, and meanwhile: a second worker joins, stops cleanly, joins again and is killed
with kill -9. For each of those it prints

- **fault took**: seconds the fault itself took (a stop waits until the process has exited);
- **failover**: seconds from then until the surviving worker holds every partition and is
  ready (for a join: until both are ready again);
- **replayed**: records the new owner read although the previous owner had processed them, per
  clean rebalance: the previous owner's last processed offset per partition (logged when its
  partitions are revoked, `partitions_released`) against the offset the new owner starts reading
  at (`partitions_taken_over`). A kill -9 leaves no such log: it replays whatever was processed
  since the last commit (at most a commit interval, 2.8 s), and the engine makes that harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import local_kafka  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from services import Service, http_json  # noqa: E402

from saga_app.client import SagaClient  # noqa: E402
from tests.integration.saga_system import SagaSystem  # noqa: E402

PARTITIONS = 4


def steady_load(system: SagaSystem, rate: float, stop: threading.Event, ids: list[str]) -> None:
    """Start create_order sagas at `rate` per second until `stop` is set, adding to `ids`."""

    async def run() -> None:
        async with SagaClient(system.settings) as client:
            began = time.monotonic()
            while not stop.is_set():
                saga_id = f"rb-{uuid.uuid4().hex[:10]}"
                payload = {"customer_id": saga_id, "items": [{"sku": "a", "qty": 1}], "amount": 1}
                await client.start("create_order", payload, saga_id=saga_id)
                ids.append(saga_id)
                # pacing the load generator, not waiting for a result
                await asyncio.sleep(max(0.0, began + len(ids) / rate - time.monotonic()))

    asyncio.run(run())


def owned(worker: Service) -> set[int] | None:
    """The partitions a ready worker holds, or None when it is not ready (or not running)."""
    try:
        status, body = http_json("GET", f"{worker.url}/health", timeout=2)
    except OSError:
        return None
    return set(body["partitions"]) if status == 200 and isinstance(body, dict) else None


def wait_until(condition: Any, timeout: float = 90.0) -> float:
    """Seconds until `condition()` holds (polled every 50 ms)."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise TimeoutError("the workers did not settle")
        time.sleep(0.05)  # polling interval
    return time.monotonic() - began


def log_events(workers: list[Service], name: str) -> list[dict[str, Any]]:
    events = []
    for worker in workers:
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
    return sorted(events, key=lambda e: e["timestamp"])


def replayed(workers: list[Service], since: str) -> int:
    """Records read again at the takeovers logged after `since` (an ISO timestamp)."""
    read_to: dict[str, int] = {}
    total = 0
    for event in sorted(
        log_events(workers, "partitions_released") + log_events(workers, "partitions_taken_over"),
        key=lambda e: e["timestamp"],
    ):
        if event["event"] == "partitions_released":
            read_to.update(event["read_to"])
        elif event["timestamp"] > since:
            for tp, start in event["reading_from"].items():
                if tp in read_to:
                    total += max(0, read_to[tp] + 1 - start)
    return total


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1e6):06d}Z"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="sagas started per second")
    args = parser.parse_args()
    workdir = scratch_dir("bench-rebalance-")
    kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
    kafka.up()
    system = SagaSystem(kafka.bootstrap_servers, workdir, "rb.", PARTITIONS, workers=2)
    first, second = system.workers
    stop = threading.Event()
    try:
        system.workers = [first]
        system.start()
        system.workers = [first, second]
        ids: list[str] = []
        load = threading.Thread(target=steady_load, args=(system, args.rate, stop, ids))
        load.start()
        everything = set(range(PARTITIONS))
        rows = []

        def step(label: str, fault: Any, settled: Any) -> None:
            wait_until(lambda: len(ids) > args.rate * 4)  # some load before each fault
            ids_before, since = len(ids), iso_now()
            began = time.monotonic()
            fault()
            took = time.monotonic() - began  # a stop waits for the process to exit
            seconds = wait_until(settled)
            wait_until(lambda: len(ids) > ids_before + args.rate * 4)  # and after
            count = replayed([first, second], since) if "kill" not in label else None
            rows.append((label, seconds, count))
            print(
                f"{label:<28} fault took {took:4.1f} s, then failover {seconds:5.1f} s"
                f"   replayed {count}",
                flush=True,
            )

        def both_ready() -> bool:
            a, b = owned(first), owned(second)
            return bool(a and b and a | b == everything)

        def first_holds_all() -> bool:
            return owned(first) == everything

        step("second worker joins", second.start, both_ready)
        step("second worker stops (TERM)", lambda: second.stop(signal.SIGTERM), first_holds_all)
        step("second worker joins again", second.start, both_ready)
        step("second worker killed (-9)", lambda: second.stop(signal.SIGKILL), first_holds_all)
        stop.set()
        load.join()
        done = sum(1 for saga_id in ids if (system.get(saga_id) or {}).get("status") == "completed")
        print(f"\n{len(ids)} sagas started at {args.rate:.0f}/s, {done} completed so far")
    finally:
        stop.set()
        system.workers = [first, second]
        system.stop()
        kafka.down()


if __name__ == "__main__":
    main()
