"""`make bench-e2e`: the product beside the bare-aiokafka floor, on one broker (not a test).

Starts one broker, then alternates, `--runs` times each:
- the floor (`benchmarks/floor.py`): the saga's traffic through bare aiokafka in one process;
- the product as deployed: a worker and the example participants as separate processes, and
  this process as the load generator, on the same number of `create_order` sagas that all
  succeed, started at once.
It prints sagas/s, messages/s and p50/p99 latency for each run, CPU seconds per 1,000 sagas for
the worker and the participants, and the ratio product / floor (the issue's goal: >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "benchmarks")]

import floor  # noqa: E402
import local_kafka  # noqa: E402
from demo import batch, percentile, run_batch  # noqa: E402
from services import Service  # noqa: E402

from saga_app.registry import EXAMPLES, load_sagas  # noqa: E402
from saga_app.settings import Settings  # noqa: E402
from saga_app.topology import ensure_topics, worker_topics  # noqa: E402

MESSAGES_PER_SAGA = 14
"""As the floor counts them: the start, 4 commands, 4 replies and 5 changelog records (one per
event the orchestrator handles). The product's saga events come on top, uncounted."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def product_run(bootstrap: str, count: int, workdir: Path, prefix: str) -> dict[str, float]:
    env = {"SAGA_BOOTSTRAP_SERVERS": bootstrap, "SAGA_TOPIC_PREFIX": prefix}
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings, worker_topics(settings, load_sagas([EXAMPLES]))))
    worker = Service("worker", env, workdir).start()
    participants = Service("participants", env, workdir).start()
    try:
        worker.wait_ready()
        participants.wait_ready()
        assert worker.process is not None and participants.process is not None
        cpu_before = cpu_seconds(worker.process.pid), cpu_seconds(participants.process.pid)
        sagas = batch(count, ["create_order"], happy=True)
        began = time.monotonic()
        finished = asyncio.run(run_batch(settings, sagas, timeout=600))
        elapsed = time.monotonic() - began
        cpu_after = cpu_seconds(worker.process.pid), cpu_seconds(participants.process.pid)
    finally:
        participants.stop()
        worker.stop()
    durations = sorted(duration for _, _, duration in finished.values())
    per_thousand = 1000 / max(len(finished), 1)
    return {
        "finished": len(finished),
        "sagas_per_s": len(finished) / elapsed,
        "messages_per_s": len(finished) * MESSAGES_PER_SAGA / elapsed,
        "p50_s": percentile(durations, 0.5),
        "p99_s": percentile(durations, 0.99),
        "worker_cpu": (cpu_after[0] - cpu_before[0]) * per_thousand,
        "participants_cpu": (cpu_after[1] - cpu_before[1]) * per_thousand,
    }


def line(label: str, figures: dict[str, float]) -> str:
    text = (
        f"{label:<16}{figures['sagas_per_s']:8.0f} sagas/s {figures['messages_per_s']:8.0f} msg/s"
        f"   p50 {figures['p50_s'] * 1000:7.0f} ms  p99 {figures['p99_s'] * 1000:7.0f} ms"
    )
    if "worker_cpu" in figures:
        text += (
            f"   CPU s per 1,000 sagas: worker {figures['worker_cpu']:.1f},"
            f" participants {figures['participants_cpu']:.1f}"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="sagas per run, started at once")
    parser.add_argument("--runs", type=int, default=2, help="runs of each side")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
    kafka.up()
    floors, products = [], []
    try:
        print(f"{args.count} create_order sagas per run, all started at once; logs in {workdir}")
        for n in range(1, args.runs + 1):
            floors.append(asyncio.run(floor.run(kafka.bootstrap_servers, args.count)))
            print(line(f"floor run {n}", floors[-1]), flush=True)
            prefix = f"e2e{n}."
            products.append(product_run(kafka.bootstrap_servers, args.count, workdir, prefix))
            print(line(f"product run {n}", products[-1]), flush=True)
    finally:
        kafka.down()
    ratio = statistics.median(p["sagas_per_s"] for p in products) / statistics.median(
        f["sagas_per_s"] for f in floors
    )
    print(f"product / floor (median sagas/s): {ratio:.3f}   (goal >= 0.5)")


if __name__ == "__main__":
    main()
