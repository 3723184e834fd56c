"""`make chaos` / `python -m benchmarks.chaos`: run the chaos suite and print its figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.chaos.run import ChaosConfig, run_chaos


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--count", type=int, default=defaults.count, help="sagas to start")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="sagas per second")
    parser.add_argument(
        "--faults",
        choices=["periodic", "once"],
        default=defaults.faults,
        help="periodic: a worker kill every --kill-every s plus one broker, one participants "
        "and one for-good worker kill; once: one fault of each kind",
    )
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every)
    parser.add_argument("--restart-delay", type=float, default=defaults.restart_delay)
    parser.add_argument("--broker-down", type=float, default=defaults.broker_down)
    parser.add_argument(
        "--settle",
        type=float,
        default=defaults.settle,
        help="seconds after the last start by which every saga must be terminal",
    )
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workdir", type=Path, help="default: a fresh temporary folder (kept)")
    parser.add_argument("--log-level", default=defaults.log_level, help="of the saga processes")
    parser.add_argument("--show", type=int, default=defaults.show, help="problem sagas to print")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        count=args.count,
        rate=args.rate,
        faults=args.faults,
        kill_every=args.kill_every,
        restart_delay=args.restart_delay,
        broker_down=args.broker_down,
        settle=args.settle,
        partitions=args.partitions,
        seed=args.seed,
        workdir=args.workdir,
        log_level=args.log_level,
        show=args.show,
    )
    report = run_chaos(config)
    f = report.figures
    return 0 if not (f.lost or f.inconsistent or f.duplicate_effects) else 1


if __name__ == "__main__":
    sys.exit(main())
