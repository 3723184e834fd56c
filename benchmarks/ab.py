"""`make bench-ab`: this checkout's product against another commit's, alternated (not a test).

On a shared machine one `make bench-e2e` run varies by ±30-40% within an hour, far more than
most changes move it, so two runs taken apart compare the machine, not the code. Here the two
sides take turns, A B B A A B ..., each run on a fresh broker (warmed up by a floor run) with
one load generator (this process, this checkout's code), each from its own tree: the other
commit from a `git worktree`, this side from the checkout as it is, uncommitted changes
included. It prints every run as `bench-e2e` does, then each side's medians and their ratio.
The machine also has slow spells of a few minutes that raise every process's CPU per saga:
more rounds, and the CPU per saga of the process a change is about, say more than one median
of sagas/s.

    python benchmarks/ab.py d7ab606 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "benchmarks")]

import local_kafka  # noqa: E402
from e2e import floor_run, line, product_run  # noqa: E402
from scratch import scratch_dir  # noqa: E402

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


@contextlib.contextmanager
def fresh_broker(data: Path, count: int) -> Iterator[local_kafka.LocalKafka]:
    """A broker of its own for one run, warmed up by an unmeasured floor run (a cold broker
    took 6.3 ms CPU per saga). One broker for every run served each run dearer than the last,
    even with each run's topics deleted after it: its system time per run went 1.2, 2.8, 4.3 s
    over three runs while the worker's CPU per saga stayed at 1.4 ms, and sagas/s followed
    the broker (437, 377, 319)."""
    kafka = local_kafka.LocalKafka(local_kafka.free_port(), 1, data, verbose=False)
    kafka.up()
    try:
        floor_run(kafka, count)
        yield kafka
    finally:
        kafka.down()


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
    workdir = scratch_dir("bench-ab-")
    labels = (f"A {args.base}", "B this checkout")
    runs: tuple[list[dict[str, float]], list[dict[str, float]]] = ([], [])
    with worktree(args.base, workdir / "base") as base:
        print(f"{args.count} create_order sagas per run, all at once; logs in {workdir}")
        for n, side in enumerate(turns(args.rounds), start=1):
            tree = (base, ROOT)[side]
            with fresh_broker(workdir / f"kafka{n}", args.count) as kafka, running_from(tree):
                figures = product_run(kafka, args.count, workdir, f"ab{n}.")
            runs[side].append(figures)
            print(line(f"{labels[side][:1]} run {n}", figures), flush=True)
    a, b = (summary(label, side_runs) for label, side_runs in zip(labels, runs, strict=True))
    print(f"B / A sagas/s: {b['sagas_per_s'] / a['sagas_per_s']:.3f}")


if __name__ == "__main__":
    main()
