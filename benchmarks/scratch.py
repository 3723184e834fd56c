"""Working directories for benchmark runs that do not fill the disk.

A run's broker log dirs and the product's stores take 0.1-2.5 GB; left in /tmp after each run,
they filled this machine's 80 GB in a few days of benchmarking, and the next run (and CI) died
of "No space left on device". The logs are what a reader comes back for, so they stay.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

BULKY = "data"
"""The name of the directories removed: each broker node's log dir (`tools/local_kafka.py`)
and the processes' stores (`SAGA_DATA_DIR` under a run's directory)."""


def scratch_dir(prefix: str) -> Path:
    """A new directory under the system's temp dir whose `data` directories are removed when
    the process exits, after its `finally` blocks have stopped the broker and the services."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(prune, workdir)
    return workdir


def prune(workdir: Path) -> None:
    """Remove every `data` directory under `workdir`, keeping the rest (logs, reports)."""
    for bulky in sorted(workdir.rglob(BULKY), reverse=True):
        if bulky.is_dir():
            shutil.rmtree(bulky, ignore_errors=True)
