"""What the worker spends per record outside Kafka: `Orchestrator.handle` (not a test).

Run `python benchmarks/bench_orchestrator.py [sagas]` from the project root. Drives the real
orchestrator, with its repository over an in-memory table, its metrics and its JSON log lines
(to a file), through `sagas` create_order sagas that all succeed, in lock step: the starts, then
the reply to every saga's first command, and so on. Replies are made from the commands the
orchestrator sent, as a participant would. Prints microseconds per record: the part of the
worker's cost that `make bench-e2e` cannot separate from the broker's noise.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from saga_app.collector import tune_for_records  # noqa: E402
from saga_app.kafka_io import SagaRepository  # noqa: E402
from saga_app.logs import configure_logging  # noqa: E402
from saga_app.metrics import SagaMetrics  # noqa: E402
from saga_app.orchestrator import Orchestrator  # noqa: E402
from saga_app.participant import reply_to, success  # noqa: E402
from saga_app.record import Record  # noqa: E402
from saga_app.registry import EXAMPLES, load_sagas  # noqa: E402
from topics import Command, StartSaga, TopicCatalog  # noqa: E402

PAYLOAD = {
    "customer_id": "c-42",
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    "amount": 99,
}


class Commands:
    """The publisher: keeps the commands, drops everything else (as bytes, as sent); `kept`
    gets every command with its topic too."""

    def __init__(self, kept: list[tuple[str, bytes]] | None = None) -> None:
        self.sent: list[bytes] = []
        self.kept = kept

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        if topic.endswith(".commands"):
            self.sent.append(value)
            if self.kept is not None:
                self.kept.append((topic, value))

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        pass


async def run(sagas: int, kept: list[tuple[str, bytes]] | None = None) -> list[float]:
    """Seconds per record of each round (all starts, then each step's replies); `kept` gets
    the commands sent, with their topics."""
    catalog = TopicCatalog(partitions=6)
    commands = Commands(kept)
    orchestrator = Orchestrator(
        catalog, load_sagas([EXAMPLES]), SagaRepository({}), commands, SagaMetrics()
    )
    offset = 0

    def record(topic: str, key: str, value: bytes) -> Record:
        nonlocal offset
        offset += 1
        return Record(topic, catalog.partition_of(key), offset, key.encode(), value, 1000.0)

    round_ = [
        record(
            catalog.requests,
            f"order-{n}",
            StartSaga(saga_id=f"order-{n}", saga_type="create_order", payload=PAYLOAD)
            .model_dump_json()
            .encode(),
        )
        for n in range(sagas)
    ]
    timings = []
    while round_:
        began = time.perf_counter()
        for each in round_:
            await orchestrator.handle(each)
        timings.append((time.perf_counter() - began) / len(round_))
        sent, commands.sent = commands.sent, []
        answered = [Command.model_validate_json(raw) for raw in sent]
        round_ = [
            record(
                catalog.replies,
                command.saga_id,
                reply_to(command, success()).model_dump_json().encode(),
            )
            for command in answered
        ]
    return timings


def measure(sagas: int, kept: list[tuple[str, bytes]] | None = None) -> list[float]:
    """Microseconds per record of 3 runs after a warm-up; `kept` gets the last run's commands."""
    tune_for_records()  # as the worker does
    asyncio.run(run(200))  # warm up
    runs = [asyncio.run(run(sagas)) for _ in range(2)]
    runs.append(asyncio.run(run(sagas, kept)))
    return [statistics.fmean(timings) * 1e6 for timings in runs]


def main() -> None:
    sagas = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    log = Path(tempfile.mkdtemp(prefix="bench-orchestrator-")) / "worker.log"
    with log.open("w") as sys.stderr:  # the log lines, as a worker writes them
        configure_logging("info", "json")
        per_record = measure(sagas)
    sys.stderr = sys.__stderr__
    print(
        f"Orchestrator.handle, create_order, {sagas} sagas in lock step, 3 runs:"
        f" {', '.join(f'{t:.0f}' for t in per_record)} µs per record"
        f" (median {statistics.median(per_record):.0f}); log lines in {log}"
    )


if __name__ == "__main__":
    main()
