"""Runs `saga worker` and `saga participants` as real processes, for the demo and the tests.

Each process gets its own web port, data dir and log file, and everything else from `SAGA_*`
variables, exactly as a user would start it. Readiness is `GET /health` answering 200.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from saga_app.web_auth import bearer_header, token_from_env

READY_TIMEOUT = 90.0


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port nobody listens on right now, picked at random below Linux's ephemeral range
    (32768+), as `local_kafka.free_port` picks a broker's. A port the OS hands out (a bind to
    port 0) is one any outgoing connection may take before the process binds it: CI failed so
    once, a participants process finding its web port 53863 in use."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port_is_free(port):
            return port
    raise RuntimeError("found no free port between 20000 and 32000 on 127.0.0.1")


def http_json(
    method: str, url: str, body: Any = None, timeout: float = 10.0, token: str | None = None
) -> tuple[int, Any]:
    """One HTTP request; returns the status and the decoded JSON body (or text if not JSON).

    It sends `token` as a bearer token; by default the one `SAGA_WEB_TOKEN` or
    `SAGA_WEB_READ_TOKEN` gives for the method, and `token=""` sends none.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in bearer_header(token_from_env(method) if token is None else token).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Service:
    """One saga process (`worker`, `participants` or `services`) with its own port, data dir
    and log."""

    def __init__(
        self,
        role: str,
        env: dict[str, str],
        workdir: Path,
        name: str | None = None,
        port: int | None = None,
        args: list[str] | None = None,
    ):
        self.role = role
        self.args = args or []
        self.name = name or role
        self.port = port or free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.env = {
            **os.environ,
            "SAGA_WEB_PORT": str(self.port),
            "SAGA_DATA_DIR": str(workdir / "data" / self.name),
            "SAGA_LOG_FORMAT": "json",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "saga_app.cli", self.role, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Service:
        """Poll `/health` until it answers 200; fail with the log's tail if the deadline passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                status, _ = http_json("GET", f"{self.url}/health", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)  # polling interval of a readiness probe
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the process (SIGTERM: a clean shutdown; SIGKILL: a crash) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
