"""README's "Your first saga" runs as written: its file and its commands, taken from README itself.

Nothing here copies the README: the file and the commands are extracted from it, so an edit that
breaks them fails this test. Only what cannot be shared on a test machine is mapped: the broker
is the session's (for `make kafka-up`), ports are free ones, topics get a unique prefix.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import free_port, http_json

from tests.integration.saga_system import Deadline

README = Path(__file__).resolve().parents[2] / "README.md"
SAGA = Path(sys.executable).parent / "saga"
"""The console script installed beside the interpreter running the tests (`.venv/bin/saga`)."""
FINISHED = {"completed", "compensated", "failed"}


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


class Shell:
    """Runs README command lines in one folder: `&` lines in the background, others to the end."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.background: list[tuple[subprocess.Popen[bytes], Path, int]] = []

    def parse(self, line: str) -> tuple[dict[str, str], list[str]]:
        words = shlex.split(line, comments=True)
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = str(free_port()) if name == "SAGA_WEB_PORT" else value
        assert words[0] == ".venv/bin/saga", f"README commands run .venv/bin/saga: {line}"
        return env, [str(SAGA), *words[1:]]

    def spawn(self, line: str) -> None:
        env, argv = self.parse(line.removesuffix("&"))
        merged = {**self.env, **env}
        log = self.folder / f"background-{len(self.background)}.log"
        process = subprocess.Popen(
            argv, cwd=self.folder, env=merged, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        self.background.append((process, log, int(merged["SAGA_WEB_PORT"])))

    def run(self, line: str) -> str:
        env, argv = self.parse(line)
        done = subprocess.run(
            argv, cwd=self.folder, env={**self.env, **env}, capture_output=True, timeout=60
        )
        assert done.returncode == 0, f"{line}: {done.stderr.decode()}"
        return done.stdout.decode()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for process, log, port in self.background:
            while True:
                assert process.poll() is None, f"exited:\n{log.read_text()[-3000:]}"
                try:
                    if http_json("GET", f"http://127.0.0.1:{port}/health", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)  # polling interval of a readiness probe

    def stop(self) -> None:
        for process, _, _ in self.background:
            process.terminate()
        for process, _, _ in self.background:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def shell(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Shell]:
    env = {
        **os.environ,
        "SAGA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_TOPIC_PREFIX": f"readme{uuid.uuid4().hex[:8]}.",
        "SAGA_WEB_PORT": str(free_port()),
        "SAGA_DATA_DIR": str(tmp_path / "data"),
        "SAGA_LOG_FORMAT": "json",
    }
    running = Shell(tmp_path, env)
    yield running
    running.stop()


def test_your_first_saga_runs_as_the_readme_says(shell: Shell, deadline: Deadline) -> None:
    """trip.py from README with README's commands: trip-1 completes, trip-2 is compensated."""
    text = section("Your first saga")
    trip = code_blocks(text, "python")[0]  # the block after "Save this as `trip.py`"
    (shell.folder / "trip.py").write_text(trip)
    commands = code_blocks(text, "bash")[0]
    lines = [line for line in commands.splitlines() if line.strip()]
    assert lines[0] == "make kafka-up"  # the session's broker stands in for it

    started = False
    statuses: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        if line.endswith("&"):
            shell.spawn(line)
            continue
        if not started:
            shell.wait_ready(deadline.left("the worker and participants ready"))
            started = True
        if " start " in line:
            saga_id = shell.run(line).strip()
            assert saga_id == shlex.split(line)[shlex.split(line).index("--saga-id") + 1]
        else:
            saga_id = shlex.split(line)[-1]
            statuses[saga_id] = poll_status(shell, line, deadline.left(f"{saga_id} finished"))

    first_log_line = json.loads(shell.background[0][1].read_text().splitlines()[0])
    assert first_log_line["sagas"] == ["book_trip v1"]
    trip1, trip2 = statuses["trip-1"], statuses["trip-2"]
    assert trip1["status"] == "completed"
    assert (trip1["context"]["room"], trip1["context"]["seat"]) == ("101", "12A")
    assert trip2["status"] == "compensated"
    assert [s["status"] for s in trip2["steps"]] == ["compensated", "failed"]
    assert trip2["steps"][1]["error"] == "no flights to atlantis"


def poll_status(shell: Shell, line: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run a `saga status` line until the saga it shows has finished."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            saga: dict[str, Any] = json.loads(shell.run(line))
            if saga["status"] in FINISHED:
                return saga
        except AssertionError:  # 404 until the start is processed
            saga = {}
        assert time.monotonic() < deadline, f"{line}: not finished in {timeout}s: {saga}"
        time.sleep(0.2)  # polling interval
