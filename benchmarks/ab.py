"""`make bench-ab`: this checkout's product against another commit's, alternated (not a test).

On a shared machine one `make bench-e2e` run varies by ±30-40% within an hour, far more than
most changes move it, so two runs taken apart compare the machine, not the code. Here the two
sides take turns, A B B A A B ..., on one broker (warmed up by a floor run first, each run's
topics deleted after it) with one load generator (this process, this checkout's code), each
from its own tree: the other commit from a `git worktree`, this side from the checkout as it
is, uncommitted changes included. It prints every run as `bench-e2e` does, then each side's
medians and their ratio. The machine also has slow spells of a few minutes that raise every
process's CPU per saga (the broker's from 0.4 to 2 ms): more rounds, and the CPU per saga of
the process a change is about, say more than one median of sagas/s.

    python benchmarks/ab.py d7ab606 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "benchmarks")]

import local_kafka  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from e2e import floor_run, line, product_run  # noqa: E402

COMPARED = ("sagas_per_s", "worker_cpu", "participants_cpu", "broker_cpu", "half_p99_s")


@contextlib.contextmanager
def worktree(rev: str, into: Path) -> Iterator[Path]:
    """A checkout of `rev` at `into`, removed afterwards."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), rev],
        check=True,
        capture_output=True,
    )
    try:
        yield into
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(into)],
            check=False,
            capture_output=True,
        )


@contextlib.contextmanager
def running_from(tree: Path) -> Iterator[None]:
    """The worker and participants import the code of `tree`: `python -m` puts the current
    folder first on their path."""
    before = Path.cwd()
    os.chdir(tree)
    try:
        yield
    finally:
        os.chdir(before)


async def delete_topics(bootstrap: str, prefix: str) -> int:
    """Delete the topics a run made (all named `prefix`...); how many there were. A broker
    that kept every run's topics served each run's sagas dearer than the last: its CPU per
    saga went from 0.6 ms in the first run to 2.4 ms in the eighth."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


def turns(rounds: int) -> list[int]:
    """A B B A A B ...: each side runs first as often as second, so a drift of the machine's
    speed during the runs weighs on both alike."""
    return [side for n in range(rounds) for side in ((0, 1) if n % 2 == 0 else (1, 0))]


def summary(label: str, runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {key: statistics.median(run[key] for run in runs) for key in COMPARED}
    print(
        f"{label:<24} median of {len(runs)}: {medians['sagas_per_s']:5.0f} sagas/s;"
        f" CPU ms per saga worker {medians['worker_cpu']:.2f},"
        f" participants {medians['participants_cpu']:.2f}, broker {medians['broker_cpu']:.2f};"
        f" p99 at half rate {medians['half_p99_s'] * 1000:.0f} ms"
    )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare this checkout with, e.g. HEAD~1")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    parser.add_argument("--count", type=int, default=2000, help="sagas per run, started at once")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    labels = (f"A {args.base}", "B this checkout")
    runs: tuple[list[dict[str, float]], list[dict[str, float]]] = ([], [])
    kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, workdir / "kafka", verbose=False)
    kafka.up()
    try:
        with worktree(args.base, workdir / "base") as base:
            print(f"{args.count} create_order sagas per run, all at once; logs in {workdir}")
            floor_run(kafka, args.count)  # unmeasured: a cold broker took 6.3 ms CPU per saga
            for n, side in enumerate(turns(args.rounds), start=1):
                with running_from((base, ROOT)[side]):
                    figures = product_run(kafka, args.count, workdir, f"ab{n}.")
                deleted = asyncio.run(delete_topics(kafka.bootstrap_servers, f"ab{n}."))
                runs[side].append(figures)
                print(line(f"{labels[side][:1]} run {n}", figures), flush=True)
                print(f"{'':<16}then deleted its {deleted} topics", flush=True)
    finally:
        kafka.down()
    a, b = (summary(label, side_runs) for label, side_runs in zip(labels, runs, strict=True))
    print(f"B / A sagas/s: {b['sagas_per_s'] / a['sagas_per_s']:.3f}")


if __name__ == "__main__":
    main()
