"""A process held to a share of one core, as if it had a small core of its own (not a test).

On a machine whose cores the broker and the participants already fill, a second worker adds
no CPU, so it cannot show what partitions spread over workers buy. Held each to the same share
of a core, the workers are the bottleneck: at a quarter of a core, one did 168-196 sagas/s and
two a median of 241, each throttled in ~90% of its periods during the burst. Uses a cgroup of
the v1 `cpu` controller (`cfs_quota_us`): root only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 20_000
"""The quota's period: short, so that a capped worker is held back often and briefly rather
than stopped for most of 100 ms (the kernel's default)."""
LEAST_SHARE = 0.05
"""The kernel refuses a quota under 1 ms, a twentieth of the period."""


def available(cores: float) -> str | None:
    """Why processes cannot be capped to `cores` of a core here, or None if they can."""
    if cores < LEAST_SHARE:
        return f"{cores} of a core is below the least share the kernel takes, {LEAST_SHARE}"
    if os.geteuid() != 0:
        return "capping a worker's CPU needs root (a cgroup of the cpu controller)"
    if not (CPU_CGROUPS / "cgroup.procs").exists():
        return f"no cgroup v1 cpu controller at {CPU_CGROUPS}"
    return None


@contextlib.contextmanager
def cpu_capped(name: str, pid: int, cores: float) -> Iterator[None]:
    """Hold process `pid` (all its threads) to `cores` of one core until the block ends."""
    group = CPU_CGROUPS / name
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(round(cores * PERIOD_US)))
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
        throttled, periods = stat["nr_throttled"], stat["nr_periods"]
        print(f"{name}: throttled in {throttled} of {periods} periods of its quota")
        for task in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it exited meanwhile
                (CPU_CGROUPS / "cgroup.procs").write_text(task)
        group.rmdir()
