"""`make bench-ceiling`: how close to the floor any implementation of the contract can come,
given the product's own logic per record (not a test).

Issue 10 asks for product / floor >= 0.5. This asks what that ratio can be at best on this
machine, with no Faust and no framework at all. It measures, in this process and without
Kafka, what the product's logic costs:
- the orchestrator's, per record (`Orchestrator.handle`, as `bench_orchestrator.py` drives it);
- the participant runtime's, per command (`ParticipantWorker.handle` over in-memory stores,
  answering the commands that run sent);
then starts one broker and runs, alternated, `--runs` times each, sagas all started at once:
- the floor: bare aiokafka, the saga's shape (`floor.py`);
- the contract floor: the records and bytes the product's contract puts on the broker per
  saga, its orchestrator loop in a process of its own as the worker is;
- the logic floor: the contract floor whose loops also burn those measured CPU times;
- the product as deployed (`make bench-e2e`'s product run: a worker, the example participants).
The logic floor / floor is the ratio's ceiling for an implementation that keeps this contract
and this logic: only less CPU per record in the logic raises it. Product / logic floor is how
much of that the product's machinery (Faust, stores, admission, metrics) leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "benchmarks")]

import bench_orchestrator  # noqa: E402
import floor  # noqa: E402
import local_kafka  # noqa: E402
from e2e import BROKER_HEAP, product_run  # noqa: E402
from scratch import scratch_dir  # noqa: E402

from saga_app.logs import configure_logging  # noqa: E402
from saga_app.participant import Records  # noqa: E402
from saga_app.participant_app import ParticipantWorker, load_participants  # noqa: E402
from saga_app.record import Record  # noqa: E402
from saga_app.settings import Settings  # noqa: E402


class _Dropped:
    """The participants' publisher: replies go nowhere (their cost is the floor's to carry)."""

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        pass


async def answer_cost(commands: list[tuple[str, bytes]]) -> float:
    """Microseconds per command that the example participants' runtime spends answering
    `commands` (topic, value), its stores in memory."""
    runtime = ParticipantWorker(
        Settings.from_env({}), load_participants(["participants:EXAMPLES"]), simulate=True
    )
    answered: Any = {}
    runtime.answered = answered
    runtime.publisher = _Dropped()  # type: ignore[assignment]
    served = {
        runtime.catalog.commands(p.name): (p, Records({}, p.name)) for p in runtime.participants
    }
    records = [
        Record(topic, 0, n, None, value, 1000.0) for n, (topic, value) in enumerate(commands)
    ]
    began = time.perf_counter()
    for record in records:
        participant, stored = served[record.topic]
        await runtime.handle(participant, stored, record)
    elapsed = time.perf_counter() - began
    if len(answered) != len(records):  # a dead letter costs less than an answer
        raise RuntimeError(f"{len(records) - len(answered)} of {len(records)} commands unanswered")
    return elapsed / len(records) * 1e6


def logic_cost(sagas: int, log: Path) -> tuple[float, float]:
    """The orchestrator's µs per record and the participants' µs per command, measured here
    with their log lines written as the processes write them (to the file `log`)."""
    commands: list[tuple[str, bytes]] = []
    lines = log.open("w")  # left open: a logger keeps the file it first wrote to
    with contextlib.redirect_stderr(lines):
        configure_logging("info", "json")
        decide = statistics.median(bench_orchestrator.measure(sagas, commands))
        answer = statistics.median(asyncio.run(answer_cost(commands)) for _ in range(3))
    structlog.reset_defaults()  # the rest of this process logs to the terminal
    return decide, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000, help="sagas per run, started at once")
    parser.add_argument("--runs", type=int, default=2, help="runs of each side")
    parser.add_argument(
        "--logic",
        type=float,
        nargs=2,
        metavar=("DECIDE_US", "ANSWER_US"),
        help="burn these µs per record and per command instead of the measured costs: what"
        " would a faster engine buy?",
    )
    args = parser.parse_args()
    workdir = scratch_dir("bench-ceiling-")
    if args.logic:
        decide, answer = args.logic
        source = "as given"
    else:
        decide, answer = logic_cost(2000, workdir / "logic.log")
        source = "measured here without Kafka"
    print(
        f"the product's logic, {source}: the orchestrator {decide:.0f} µs per record,"
        f" the participant runtime {answer:.0f} µs per command",
        flush=True,
    )
    logic = dataclasses.replace(floor.CONTRACT, decide_us=decide, answer_us=answer)
    floors = {
        "floor": (floor.BARE, 0),
        "contract floor": (floor.CONTRACT, 1),
        "logic floor": (logic, 1),
    }
    kafka = local_kafka.LocalKafka(
        local_kafka.free_port(), 1, workdir / "kafka", verbose=False, heap=BROKER_HEAP
    )
    kafka.up()
    rates: dict[str, list[float]] = {name: [] for name in [*floors, "product"]}

    def report(name: str, n: int, figures: dict[str, float]) -> None:
        rates[name].append(figures["sagas_per_s"])
        print(
            f"{name:15s} run {n}: {figures['sagas_per_s']:6.0f} sagas/s"
            f"  p50 {figures['p50_s'] * 1e3:5.0f} ms  p99 {figures['p99_s'] * 1e3:5.0f} ms",
            flush=True,
        )

    try:
        for n in range(1, args.runs + 1):
            for name, (traffic, apart) in floors.items():
                figures = asyncio.run(
                    floor.run(
                        kafka.bootstrap_servers, args.count, orchestrators=apart, traffic=traffic
                    )
                )
                report(name, n, figures)
            figures = product_run(kafka, args.count, workdir, f"ceiling{n}.", paced_loads_too=False)
            report("product", n, figures)
    finally:
        kafka.down()
    median = {name: statistics.median(each) for name, each in rates.items()}
    for name in ("contract floor", "logic floor", "product"):
        print(f"{name} / floor (median sagas/s): {median[name] / median['floor']:.3f}")
    print(f"product / logic floor: {median['product'] / median['logic floor']:.3f}")
    print("the issue's goal: product / floor >= 0.5")


if __name__ == "__main__":
    main()
