"""`make bench-e2e`: the product beside the bare-aiokafka floor, on one broker (not a test).

Starts one broker, then alternates, `--runs` times each:
- the floor (`benchmarks/floor.py`): the saga's traffic through bare aiokafka in one process;
- the product as deployed: a worker and the example participants as separate processes, and
  this process as the load generator, on the same number of `create_order` sagas that all
  succeed, started at once.
It prints sagas/s, messages/s (the records each side puts on the broker: 14 per saga for the
floor, 32 for the product) and p50/p99 latency for each run, how busy the machine was (both
cores), CPU seconds per 1,000 sagas for the worker and the participants, and the ratio
product / floor (the issue's goal: >= 0.5).
Then each side runs paced, at half its own maximum rate and at 10 sagas/s, for the latency at
those loads (the floor: start sent to last reply read; the product: the start's and the last
reply's timestamps, as `saga.events` carries them; each load after a lead-in of itself that is
not counted, until the broker has compiled the code it runs: `warmed_up`), and the CPU per
saga at each: at half the maximum rate rounds hold few records, and each round's fetch and
produce requests cost about as much as its sagas (`benchmarks/round_cost.py`): the product's
paced loads kept both cores 88-93% busy, more than its burst did (62-74%); the floor's 200/s
load kept them 65-67% busy.
With `--worker-cores 0.25`, each worker is held to a quarter of a core (`cpu_cap.py`, root):
the workers are then the bottleneck, and `--workers 1` against `--workers 2` shows what a
second worker on its own partitions buys. Uncapped, on two cores that the broker and the
participants fill too, a second worker brings no CPU with it, so it shows nothing.
The floor's orchestrator loop is then held the same way, in as many processes of its own (at a
quarter of a core: 1,262-1,287 sagas/s with one, 2,187-2,422 with two).
With `--participant-cores 0.05`, the participants are held to a twentieth of a core: slow
participants, whose backlog of commands the admission limit keeps under a step's timeout
(2,000 at once: no step timed out at `--max-running` 250, 500 or 1,000, 519 at 2,000).
With `--narrow`, the worker runs create_order only and the participants it calls only, as a
deployment of that one saga would: each fetches fewer partitions (`make bench-hops`).
The workers run with `SAGA_MAX_RUNNING` 500 (the default; `--max-running`): 1,500 of 2,000
sagas started at once take the admission queue, and the figure measures it too (2,000 at
once, alternated: 1,053 sagas/s at 250, 1,129 at 500).
With `--contract`, each run has a third side: the contract floor, the floor carrying the
records and bytes the product's contract puts on the broker per saga (`floor.CONTRACT`: 32
records and 18.6 kB against the floor's 14 and ~1 kB), its orchestrator loop in a process of
its own as the worker is (in one process it is bound by that process's CPU: 1,480-1,600
sagas/s against 2,070-2,100 apart; the bare floor did not gain from it), and the ratio
product / contract floor follows: what the product's own machinery costs, apart from what its
contract costs.
With `--profile`, py-spy samples the worker and the participants during each product run and
a summary of where their time went follows (the raw stacks stay in the log folder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "benchmarks")]

import floor  # noqa: E402
import local_kafka  # noqa: E402
from cpu_cap import available, cpu_capped  # noqa: E402
from demo import batch, percentile, run_batch  # noqa: E402
from scratch import scratch_dir  # noqa: E402
from services import Service  # noqa: E402

from saga_app.registry import EXAMPLES, load_sagas  # noqa: E402
from saga_app.settings import Settings  # noqa: E402
from saga_app.topology import ensure_topics, worker_topics  # noqa: E402

NARROW_SAGA = "saga_app.sagas.create_order"
"""The one saga a narrow deployment runs."""

MESSAGES_PER_SAGA = floor.CONTRACT.messages_per_saga
"""The records a create_order saga puts on the broker, as the contract floor carries them: the
start, 4 commands, 4 replies, 5 states, 10 events and 8 participant records (the bare floor:
the first 14)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    """User + system CPU seconds of a process's or a thread's /proc `stat` file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds this process and its children that ended (the floor's orchestrator
    processes, once a run stops them) have used so far."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine so far, in clock ticks (/proc/stat): busy is
    everything but idle and I/O wait."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def busy_since(before: tuple[int, int]) -> float:
    """The share of the machine's CPU (all cores) that was busy since `before`."""
    busy, every = (now - then for now, then in zip(machine_jiffies(), before, strict=True))
    return busy / max(every, 1)


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample `pid` until it exits or is told to stop (SIGINT), as collapsed stacks in `out`."""
    options = ["--rate", "250", "--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def where_time_went(raw: Path, top: int = 12) -> str:
    """Shares of the samples: by the package of the innermost frame, by the task the event loop
    was running (the frame after `Handle._run`), and the costliest innermost functions."""
    by_package: dict[str, int] = {}
    by_task: dict[str, int] = {}
    by_function: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        leaf = frames[-1]
        runs = [n for n, frame in enumerate(frames) if frame.startswith("Handle._run ")]
        task = frames[runs[-1] + 1] if runs and runs[-1] + 1 < len(frames) else leaf
        for table, name in ((by_package, _package(leaf)), (by_task, task), (by_function, leaf)):
            table[name] = table.get(name, 0) + samples
    total = sum(by_function.values())

    def shares(table: dict[str, int], n: int) -> list[str]:
        ranked = sorted(table.items(), key=lambda item: -item[1])[:n]
        return [f"{samples / total:6.1%}  {name}" for name, samples in ranked]

    return "\n".join(
        ["  by package: " + ", ".join(s.strip() for s in shares(by_package, 8)), "  by task:"]
        + [f"  {s}" for s in shares(by_task, 6)]
        + ["  by function:"]
        + [f"  {s}" for s in shares(by_function, top)]
    )


def _package(frame: str) -> str:
    """`faust` of `Store._set (faust/stores/rocksdb.py:480)`; `python` for a top-level module."""
    path = frame.rpartition("(")[2]
    return path.split("/", 1)[0] if "/" in path else "python"


@contextlib.contextmanager
def running_product(
    kafka: local_kafka.LocalKafka,
    workdir: Path,
    prefix: str,
    workers: int = 1,
    max_running: int = Settings.max_running,
    narrow: bool = False,
) -> Iterator[tuple[Settings, dict[str, int]]]:
    """The product on `kafka`, ready: `workers` workers and the example participants, as
    separate processes. Yields the settings and each process's pid. `narrow`: the workers run
    only create_order and the participants only the ones it calls, as a deployment of that one
    saga would, so each fetches fewer partitions."""
    env = {
        "SAGA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SAGA_TOPIC_PREFIX": prefix,
        "SAGA_STOCK_PER_SKU": str(10**9),  # every run is happy: stock never runs out,
        "SAGA_CREDIT_LIMIT": str(10**15),  # nor credit (50 customers x 1,000: 5,000 sagas)
        "SAGA_MAX_RUNNING": str(max_running),
    }
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings, worker_topics(settings, load_sagas([EXAMPLES]))))
    names = ["worker"] if workers == 1 else [f"worker{n}" for n in range(1, workers + 1)]
    if narrow:
        worker_env = {**env, "SAGA_SAGAS": NARROW_SAGA}
        steps = load_sagas([NARROW_SAGA]).newest("create_order").steps
        called = sorted({step.participant for step in steps})
        specs = [f"participants.{name}:{name}" for name in called]
        participants = Service("participant", env, workdir, name="participants", args=specs)
    else:
        worker_env, participants = env, Service("participants", env, workdir)
    services = [Service("worker", worker_env, workdir, name=name) for name in names]
    services.append(participants)
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        yield (
            settings,
            {service.name: service.process.pid for service in services if service.process},
        )
    finally:
        for service in reversed(services):
            service.stop()


def product_run(
    kafka: local_kafka.LocalKafka,
    count: int,
    workdir: Path,
    prefix: str,
    profile: bool = False,
    workers: int = 1,
    worker_cores: float = 0.0,
    max_running: int = Settings.max_running,
    rates: Sequence[float] = (),
    participant_cores: float = 0.0,
    narrow: bool = False,
    paced_loads_too: bool = True,
) -> dict[str, float]:
    """The product on `count` sagas at once, then (if `paced_loads_too`) at the paced loads:
    half its maximum rate, 10 sagas/s and `rates`."""
    with (
        running_product(kafka, workdir, prefix, workers, max_running, narrow) as (settings, pids),
        contextlib.ExitStack() as capped,
    ):
        names = [name for name in pids if name.startswith("worker")]
        for name in names if worker_cores else ():
            capped.enter_context(cpu_capped(f"{prefix}{name}", pids[name], worker_cores))
        if participant_cores:
            name = "participants"
            capped.enter_context(cpu_capped(f"{prefix}{name}", pids[name], participant_cores))
        stacks = {name: workdir / f"{prefix}{name}.stacks" for name in pids}
        pids["broker"] = kafka.pid(1) or 0

        def measured(
            sagas: list[Any], rate: float | None = None
        ) -> tuple[dict[str, Any], dict[str, float], float]:
            """Run a load (all at once, or `rate` per second): its finished sagas, what the
            processes used (`cpu_per_thousand`), and its seconds."""
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            began, machine = time.monotonic(), machine_jiffies()
            finished = asyncio.run(run_batch(settings, sagas, timeout=600, rate=rate))
            elapsed = time.monotonic() - began
            warn_unless_completed(finished)
            used = cpu_per_thousand(pids, names, cpu_before, machine, len(finished))
            return finished, used, elapsed

        samplers = [py_spy(pids[name], stacks[name]) for name in stacks] if profile else []
        sagas = batch(count, ["create_order"], happy=True)
        load_cpu = time.process_time()
        finished, used, elapsed = measured(sagas)
        load_cpu = time.process_time() - load_cpu
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
        for name in stacks if profile else ():
            print(f"where the {name} process's time went:\n{where_time_went(stacks[name])}")
        figures = {
            "sagas_per_s": len(finished) / elapsed,
            "messages_per_s": len(finished) * MESSAGES_PER_SAGA / elapsed,
            **latencies(finished),
            **used,
            "load_cpu": load_cpu * 1000 / max(len(finished), 1),
        }
        loads = paced_loads(figures["sagas_per_s"], rates) if paced_loads_too else []
        for name, rate, paced in loads:

            def leading(sagas: int, rate: float = rate) -> object:
                lead = batch(sagas, ["create_order"], happy=True)
                return asyncio.run(run_batch(settings, lead, timeout=600, rate=rate))

            led = warmed_up(leading, rate, pids["broker"])
            finished, used, _ = measured(batch(paced, ["create_order"], happy=True), rate)
            figures |= {f"{name}_{k}": v for k, v in (latencies(finished) | used).items()}
            figures[f"{name}_lead_in_s"] = led
    return figures


def warn_unless_completed(finished: dict[str, tuple[str, str, float]]) -> None:
    """Every saga of these loads should complete: one that compensated took another path, and
    its latency another figure. (Until the credit limit above was lifted, every run's loads after
    the first 5,000 sagas compensated: the 200/s load of `--rates 200` all of them.)"""
    ended = Counter(outcome for _, outcome, _ in finished.values())
    if set(ended) - {"completed"}:
        print(f"warning: not every saga completed ({dict(ended)}): the figures mix paths")


def cpu_per_thousand(
    pids: dict[str, int],
    workers: list[str],
    before: dict[str, float],
    machine: tuple[int, int],
    sagas: int,
) -> dict[str, float]:
    """CPU seconds per 1,000 sagas the workers, the participants and the broker used since
    `before`, and how busy the machine was since `machine` (`machine_jiffies`)."""
    per_thousand = 1000 / max(sagas, 1)
    used = {name: (cpu_seconds(pid) - before[name]) * per_thousand for name, pid in pids.items()}
    return {
        "worker_cpu": sum(used[name] for name in workers),
        "participants_cpu": used["participants"],
        "broker_cpu": used["broker"],
        "machine_busy": busy_since(machine),
    }


def latencies(finished: dict[str, tuple[str, str, float]]) -> dict[str, float]:
    """p50 and p99 of the sagas' durations, from their `saga_started` to their last event."""
    durations = sorted(duration for _, _, duration in finished.values())
    return {"p50_s": percentile(durations, 0.5), "p99_s": percentile(durations, 0.99)}


BROKER_HEAP = "2g"
"""The broker's heap: every run adds ~260 partitions, and at the default 512 MB the collector's
concurrent cycles took 0.3-0.5 ms of broker CPU per saga from the third run on one broker."""

PACED_SECONDS = 10.0
"""How long each paced load runs."""

LEAD_IN_SECONDS = 3.0
"""Each paced load first runs uncounted, this long at a time, until the broker has compiled the
code its new kind of traffic runs (`warmed_up`)."""

JIT_SETTLED = 0.1
"""The share of a core the broker's JIT compiler may still take while a lead-in runs for the
load after it to be counted. At the start of a paced load of 500 sagas/s on a new broker, its
compiler threads took 0.6-0.7 of a core for 5 s, 0.26-0.45 for 5 s more and ~0.1 for 2 s after:
sagas started then took 300-725 ms, later ones 100-250 ms. Here the floor's first half-rate
load needed 15-16 s of lead-in, and the product's 6 s even after the floor's loads and its own
burst. A fixed 3 s lead-in left the rest in the counted load, whose p99 then told of the JIT
more than of the processes it measures: a broker that runs for days compiled that code long
ago."""

LEAD_IN_MAX_SECONDS = 30.0
"""The longest a lead-in runs, settled or not."""


def compiler_seconds(pid: int) -> float:
    """CPU seconds the JVM `pid` has spent in its JIT compiler threads so far (Linux /proc)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if "Compiler" in (task / "comm").read_text():
                total += _stat_cpu(task / "stat")
    return total


def warmed_up(run: Callable[[int], object], rate: float, broker: int) -> float:
    """Run a paced load at `rate` uncounted (`run(sagas)`), `LEAD_IN_SECONDS` at a time, until
    the broker's JIT has settled (`JIT_SETTLED`) or `LEAD_IN_MAX_SECONDS` have passed; returns
    the seconds it ran."""
    ran = 0.0
    while ran < LEAD_IN_MAX_SECONDS:
        compiled, began = compiler_seconds(broker), time.monotonic()
        run(max(1, int(rate * LEAD_IN_SECONDS)))
        elapsed = time.monotonic() - began
        ran += elapsed
        if (compiler_seconds(broker) - compiled) / elapsed < JIT_SETTLED:
            break
    return ran


def paced_loads(max_rate: float, rates: Sequence[float] = ()) -> list[tuple[str, float, int]]:
    """(name, sagas per second, sagas) of the loads whose latency is measured: half the
    maximum rate, 10 sagas/s, and each of `rates` (each after its lead-in: `warmed_up`)."""
    loads = [("half", max_rate / 2), ("slow", 10.0), *((f"at{rate:g}", rate) for rate in rates)]
    return [(name, rate, int(rate * PACED_SECONDS)) for name, rate in loads]


def floor_run(
    kafka: local_kafka.LocalKafka,
    count: int,
    rates: Sequence[float] = (),
    workers: int = 1,
    worker_cores: float = 0.0,
    traffic: floor.Traffic = floor.BARE,
    apart: bool = False,
) -> dict[str, float]:
    """The floor at its maximum rate, then at the same paced loads as the product. With
    `worker_cores` or `apart`, its orchestrator loop runs as the workers do: in `workers`
    processes of its own, each held to `worker_cores` of a core if that is set (`floor_cpu`
    counts them too)."""
    bootstrap, broker = kafka.bootstrap_servers, kafka.pid(1) or 0
    orchestrators = workers if worker_cores or apart else 0

    def run(sagas: int, rate: float | None = None) -> dict[str, float]:
        return asyncio.run(floor.run(bootstrap, sagas, rate, orchestrators, worker_cores, traffic))

    def measured(sagas: int, rate: float | None = None) -> dict[str, float]:
        broker_cpu, cpu, machine = cpu_seconds(broker), own_cpu(), machine_jiffies()
        figures = run(sagas, rate)
        figures["floor_cpu"] = (own_cpu() - cpu) * 1000 / sagas
        figures["broker_cpu"] = (cpu_seconds(broker) - broker_cpu) * 1000 / sagas
        figures["machine_busy"] = busy_since(machine)
        return figures

    figures = measured(count)
    for name, rate, paced in paced_loads(figures["sagas_per_s"], rates):
        led = warmed_up(lambda sagas, rate=rate: run(sagas, rate), rate, broker)
        paced_figures = measured(paced, rate)
        figures |= {
            f"{name}_{k}": paced_figures[k]
            for k in ("p50_s", "p99_s", "floor_cpu", "broker_cpu", "machine_busy")
        }
        figures[f"{name}_lead_in_s"] = led
    return figures


def line(label: str, figures: dict[str, float], rates: Sequence[float] = ()) -> str:
    text = (
        f"{label:<16}{figures['sagas_per_s']:8.0f} sagas/s {figures['messages_per_s']:8.0f} msg/s"
        f"   p50 {figures['p50_s'] * 1000:7.0f} ms  p99 {figures['p99_s'] * 1000:7.0f} ms"
    )
    text += "   " + cpu_text(figures)
    if "load_cpu" in figures:
        text += f", load generator {figures['load_cpu']:.1f}"
    for name, rate, _ in paced_loads(figures["sagas_per_s"], rates):
        paced = {
            k.removeprefix(f"{name}_"): v for k, v in figures.items() if k.startswith(f"{name}_")
        }
        text += (
            f"\n{'':<16}at {rate:6.0f} sagas/s:  p50 {paced['p50_s'] * 1000:7.0f} ms"
            f"  p99 {paced['p99_s'] * 1000:7.0f} ms   {cpu_text(paced)}"
            f"; after {paced['lead_in_s']:.0f} s of lead-in"
        )
    return text


def cpu_text(figures: dict[str, float]) -> str:
    """The CPU figures of one run: how busy the machine was (both cores: at 100% every load
    waits for CPU), and the worker's and the participants', or the floor's, per saga."""
    busy = f"machine {figures['machine_busy']:4.0%} busy; "
    if "worker_cpu" in figures:
        return busy + (
            f"CPU s per 1,000 sagas: worker {figures['worker_cpu']:.1f},"
            f" participants {figures['participants_cpu']:.1f}, broker {figures['broker_cpu']:.1f}"
        )
    return busy + (
        f"CPU s per 1,000 sagas: floor {figures['floor_cpu']:.1f},"
        f" broker {figures['broker_cpu']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="sagas per run, started at once")
    parser.add_argument("--runs", type=int, default=2, help="runs of each side")
    parser.add_argument(
        "--profile", action="store_true", help="sample the product's processes with py-spy"
    )
    parser.add_argument("--workers", type=int, default=1, help="orchestrator workers")
    parser.add_argument(
        "--worker-cores",
        type=float,
        default=0.0,
        help="hold each worker to this share of one core (e.g. 0.25; needs root), so that"
        " workers are the bottleneck and what more of them buy shows (benchmarks/cpu_cap.py)",
    )
    parser.add_argument(
        "--participant-cores",
        type=float,
        default=0.0,
        help="hold the participants to this share of one core (e.g. 0.05; needs root): slow"
        " participants, whose backlog of commands the admission limit keeps short",
    )
    parser.add_argument(
        "--max-running",
        type=int,
        default=Settings.max_running,
        help="SAGA_MAX_RUNNING for the workers: starts beyond it take the admission queue, which"
        " a burst larger than it pays for (2,000 at once: 1,053 sagas/s at 250, 1,129 at 500)",
    )
    parser.add_argument(
        "--rates",
        type=lambda text: [float(rate) for rate in text.split(",")],
        default=[],
        help="more paced loads, in sagas/s, comma-separated (e.g. 100,200,300): latency at a"
        " fixed rate, the same for both sides, where half the maximum follows each side's own",
    )
    parser.add_argument(
        "--narrow",
        action="store_true",
        help="run the worker with create_order only and the participants it calls only, as a"
        " deployment of that one saga would: each fetches fewer partitions",
    )
    parser.add_argument(
        "--contract",
        action="store_true",
        help="run the contract floor too: the floor carrying the records and bytes the"
        " product's contract puts on the broker per saga (benchmarks/floor.py, CONTRACT)",
    )
    args = parser.parse_args()
    for cores in (args.worker_cores, args.participant_cores):
        if cores and (why := available(cores)):
            parser.error(why)
    workdir = scratch_dir("bench-e2e-")
    kafka = local_kafka.LocalKafka(
        local_kafka.free_port(), 1, workdir / "kafka", verbose=False, heap=BROKER_HEAP
    )
    kafka.up()
    floors, contract_floors, products = [], [], []
    try:
        capped = f", each held to {args.worker_cores} of a core" if args.worker_cores else ""
        if args.participant_cores:
            capped += f", participants held to {args.participant_cores} of a core"
        if args.narrow:
            capped += ", create_order's processes only"
        print(
            f"{args.count} create_order sagas per run, all started at once, {args.workers}"
            f" worker(s){capped}, SAGA_MAX_RUNNING={args.max_running}; logs in {workdir}"
        )
        options = (
            args.profile,
            args.workers,
            args.worker_cores,
            args.max_running,
            args.rates,
            args.participant_cores,
            args.narrow,
        )
        for n in range(1, args.runs + 1):
            floors.append(floor_run(kafka, args.count, args.rates, args.workers, args.worker_cores))
            print(line(f"floor run {n}", floors[-1], args.rates), flush=True)
            if args.contract:
                contract_floors.append(
                    floor_run(
                        kafka,
                        args.count,
                        args.rates,
                        args.workers,
                        args.worker_cores,
                        traffic=floor.CONTRACT,
                        apart=True,
                    )
                )
                print(line(f"contract floor {n}", contract_floors[-1], args.rates), flush=True)
            products.append(product_run(kafka, args.count, workdir, f"e2e{n}.", *options))
            print(line(f"product run {n}", products[-1], args.rates), flush=True)
    finally:
        kafka.down()
    product = statistics.median(p["sagas_per_s"] for p in products)
    ratio = product / statistics.median(f["sagas_per_s"] for f in floors)
    print(f"product / floor (median sagas/s): {ratio:.3f}   (goal >= 0.5)")
    if contract_floors:
        ratio = product / statistics.median(f["sagas_per_s"] for f in contract_floors)
        print(f"product / contract floor (median sagas/s): {ratio:.3f}")


if __name__ == "__main__":
    main()
