"""README's "Your first saga" and its tracked saga ("Tracking services that already publish
events") run as written: their files and commands, taken from README itself.

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


def section(title: str, level: str = "##") -> str:
    """The text under a heading, to the next heading of the same or a higher level."""
    text = README.read_text()
    start = text.index(f"{level} {title}\n")
    ends = [
        i
        for i in (text.find(f"\n{h} ", start + 1) for h in ("##", "###")[: len(level) - 1])
        if i != -1
    ]
    return text[start : min(ends) if ends else None]


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


def run_section(shell: Shell, text: str, module: str, deadline: Deadline) -> dict[str, Any]:
    """Save the section's Python block as `module`.py, run its bash block line by line (the
    background ones first, then the rest once they answer /health); returns each `saga status`
    line's saga, polled until it finished."""
    (shell.folder / f"{module}.py").write_text(code_blocks(text, "python")[0])
    lines = [line for line in code_blocks(text, "bash")[0].splitlines() if line.strip()]
    assert lines[0] == "make kafka-up"  # the session's broker stands in for it
    started = False
    statuses: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        if line.endswith("&"):
            shell.spawn(line)
            continue
        if not started:
            shell.wait_ready(deadline.left("the background processes ready"))
            started = True
        words = shlex.split(line)
        if words[1] == "status":
            statuses[words[-1]] = poll_status(shell, line, deadline.left(f"{words[-1]} finished"))
        elif words[1] == "start":
            assert shell.run(line).strip() == words[words.index("--saga-id") + 1]
        else:
            shell.run(line)
    return statuses


def test_your_first_saga_runs_as_the_readme_says(shell: Shell, deadline: Deadline) -> None:
    """trip.py from README with README's commands: trip-1 completes, trip-2 is compensated."""
    statuses = run_section(shell, section("Your first saga"), "trip", deadline)
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


def test_tracking_existing_services_runs_as_the_readme_says(
    shell: Shell, deadline: Deadline
) -> None:
    """shipping.py with README's commands: o-7 completes from events in any order and keyed by
    anything; o-8 times out and, its compensation never announced back, fails."""
    text = section("Tracking services that already publish events", "###")
    statuses = run_section(shell, text, "shipping", deadline)
    o7, o8 = statuses["o-7"], statuses["o-8"]
    assert (o7["status"], o7["mode"]) == ("completed", "tracked")
    assert o8["status"] == "failed"
    assert o8["error"] == "no compensation event from warehouse within 5s"
    assert [s["status"] for s in o8["steps"]] == ["compensating", "pending", "pending"]
    assert "deadline_exceeded" in [h["event"] for h in o8["history"]]
