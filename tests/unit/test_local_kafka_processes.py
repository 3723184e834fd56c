"""LocalKafka's process bookkeeping, with stand-in processes instead of brokers."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import local_kafka


def sleeper(marker: str) -> subprocess.Popen[bytes]:
    """A process that runs until killed, with `marker` on its command line."""
    code = "import time\nwhile True: time.sleep(1)"
    return subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True)


def test_launch_waits_until_the_command_line_shows_the_new_program() -> None:
    """After the wait, /proc shows the child's own command line, not the empty one of exec."""
    proc = sleeper("marker-for-exec")
    try:
        local_kafka._wait_for_exec(proc, "marker-for-exec")
        assert "marker-for-exec" in local_kafka._cmdline(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)


def test_terminate_stops_a_node_it_started_even_without_a_pid_file(tmp_path: Path) -> None:
    """A node whose pid file is missing or unreadable is still stopped, never orphaned."""
    kafka = local_kafka.LocalKafka(29092, 3, tmp_path, verbose=False)
    proc = sleeper("not-a-kafka-node")
    kafka._procs[2] = proc
    kafka.node(2).dir.mkdir(parents=True)
    kafka._terminate([2], signal.SIGTERM, timeout=10)
    assert proc.poll() is not None
