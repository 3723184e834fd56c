#!/usr/bin/env python3
"""A real Apache Kafka broker on loopback, assembled from Maven Central and run in KRaft mode.

The broker is the genuine Apache Kafka server (``kafka.Kafka`` of ``org.apache.kafka:kafka_2.13``),
fetched once with Maven into ``<repo>/.cache/kafka/lib`` (see ``tools/kafka/pom.xml``) and started
from that flat classpath as combined broker+controller node(s). Needs Java 17+ (and Maven for the
one-time fetch); readiness is checked with aiokafka, which is imported only when a broker starts.

Command line (run it with any Python that has aiokafka, e.g. the project's ``.venv``)::

    python tools/local_kafka.py up     [--port N] [--nodes 1|3] [--state-dir DIR] [--secure]
    python tools/local_kafka.py status [--port N] [--state-dir DIR]  # exit 0 when all nodes run
    python tools/local_kafka.py down   [--port N] [--state-dir DIR]
    python tools/local_kafka.py fetch                                 # only fetch the jars
    python tools/local_kafka.py free-port [--nodes 1|3]               # print a usable --port

``--port`` defaults to ``$KAFKA_PORT`` or 9092. Node *i* (0-based) listens on ``port + 2*i`` and its
controller on ``port + 2*i + 1``: one node uses port and port+1, three nodes use port..port+5.
The state dir (default ``<repo>/.cache/kafka/run-<port>``) holds ``cluster.json`` and one folder per
node with ``server.properties``, ``data/``, ``kafka.log`` and ``kafka.pid``.

``up --secure`` serves clients over SASL_SSL instead of PLAINTEXT (SCRAM users, a local CA and
broker certificate: see ``kafka_security.py``) and prints the ``SAGA_*`` variables a client needs.

``up`` formats fresh data and starts the node(s) detached (own session: Ctrl-C of ``make`` does not
reach them), then waits until a client sees every node in the cluster metadata. It does nothing when
the broker of its pid files is already running. ``down`` stops exactly the pids of its pid files.

Library use::

    from local_kafka import LocalKafka, free_port

    with LocalKafka(port=free_port(), state_dir=tmp) as kafka:   # up() ... down()
        use(kafka.bootstrap_servers)                              # "127.0.0.1:PORT"
        kafka.stop(); kafka.start()                               # restart, data kept
        kafka.kill_node(1); kafka.start_node(1)                   # crash / recover one node
        kafka.client_options()   # aiokafka keyword arguments ({} unless secure=True)
        kafka.client_env()       # SAGA_BOOTSTRAP_SERVERS and, if secure, the SAGA_SASL_*/SSL_*
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

if __package__:  # imported as tools.local_kafka (the demo)
    from tools import kafka_security
else:  # run as a script, or imported as local_kafka with tools/ on sys.path (the tests)
    import kafka_security

REPO = Path(__file__).resolve().parents[1]
KAFKA_DIR = REPO / "tools" / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
CACHE = REPO / ".cache" / "kafka"
LIB = CACHE / "lib"
MARKER = LIB / ".complete"  # written last by fetch(): holds the hash of the pom it fetched

DEFAULT_PORT = 9092
READY_TIMEOUT = 60.0  # seconds until all nodes must be in the cluster metadata
STOP_TIMEOUT = 30.0  # seconds between SIGTERM and SIGKILL
HOST = "127.0.0.1"

JAVA_HINT = (
    "Java 17+ is needed to run Kafka: apt-get install openjdk-17-jdk-headless "
    "(macOS: brew install openjdk@17), or point JAVA_HOME at a JDK 17+"
)
MAVEN_HINT = (
    "Maven is needed to fetch Kafka from Maven Central (once): apt-get install maven "
    "(macOS: brew install maven)"
)


class KafkaToolError(RuntimeError):
    """A local-broker operation failed; the message says why and what to do."""


class PortInUseError(KafkaToolError):
    """A port the broker needs is already taken by another process."""


def kafka_version() -> str:
    """The Kafka version pinned in tools/kafka/pom.xml (the single place it is written)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise KafkaToolError(f"no <kafka.version> property in {POM}")
    return node.text.strip()


# --------------------------------------------------------------------------- prerequisites


def java_executable() -> str:
    """The ``java`` to use ($JAVA_HOME/bin/java, else PATH), checked to be version 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        where = f"in JAVA_HOME={java_home}" if java_home else "on PATH"
        raise KafkaToolError(f"no `java` {where}. {JAVA_HINT}")
    try:
        out = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaToolError(f"`{candidate} -version` failed ({exc}). {JAVA_HINT}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise KafkaToolError(f"cannot tell the version of {candidate}. {JAVA_HINT}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    if major < 17:
        raise KafkaToolError(f"{candidate} is Java {major}. {JAVA_HINT}")
    return candidate


def _pom_digest() -> str:
    import hashlib

    return hashlib.sha256(POM.read_bytes()).hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so that two processes do not fetch or start at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetched() -> bool:
    """True when .cache/kafka/lib holds a complete copy of the jars of the current pom."""
    return MARKER.is_file() and MARKER.read_text().strip() == _pom_digest()


def fetch(*, quiet: bool = False) -> Path:
    """Copy the Kafka jars from Maven Central into ``.cache/kafka/lib`` once; return that folder.

    Skipped when the marker file of a complete copy of the current pom is there. Maven's own cache
    (~/.m2) makes later fetches (e.g. after a version change) quick too.
    """
    if fetched():
        return LIB
    with _file_lock(CACHE / ".fetch.lock"):
        if fetched():  # another process fetched while we waited
            return LIB
        java_executable()  # fail early with the install hint: Maven needs a JDK too
        mvn = shutil.which("mvn")
        if not mvn:
            raise KafkaToolError(f"no `mvn` found. {MAVEN_HINT}")
        version = kafka_version()
        if not quiet:
            print(
                f"fetching Kafka {version} from Maven Central (once, ~45 MB) into {_show(LIB)} ...",
                flush=True,
            )
        started = time.monotonic()
        staging = CACHE / f"lib.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
        if proc.returncode != 0 or not any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
            shutil.rmtree(staging, ignore_errors=True)
            output = _tail((proc.stdout + proc.stderr).splitlines(), 30)
            raise KafkaToolError(
                f"fetching Kafka {version} with Maven failed (exit {proc.returncode}); "
                f"is Maven Central reachable?\n$ {' '.join(cmd)}\n{output}"
            )
        size = sum(j.stat().st_size for j in jars) / 1e6
        (staging / MARKER.name).write_text(_pom_digest() + "\n")
        shutil.rmtree(LIB, ignore_errors=True)
        staging.rename(LIB)
        if not quiet:
            took = time.monotonic() - started
            print(f"fetched {len(jars)} jars ({size:.0f} MB) in {took:.1f} s", flush=True)
    return LIB


# --------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    """True when a server socket could listen on 127.0.0.1:port (as Java does: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def node_ports(port: int, nodes: int) -> list[tuple[int, int]]:
    """(broker port, controller port) of each node: node i uses port+2i and port+2i+1."""
    return [(port + 2 * i, port + 2 * i + 1) for i in range(nodes)]


def free_port(nodes: int = 1) -> int:
    """A base port whose broker and controller ports (all ``2 * nodes`` of them) are free.

    Picked at random below Linux's ephemeral range (32768+), so that outgoing connections of
    other programs are unlikely to take the ports between this call and the broker's start.
    """
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32000, 2)
        if all(_port_free(p) for pair in node_ports(base, nodes) for p in pair):
            return base
    raise KafkaToolError("found no free ports between 20000 and 32000 on 127.0.0.1")


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is dead for our purposes
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return []
    except OSError:
        return []
    out = subprocess.run(  # no /proc (macOS): ask ps
        ["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return out.stdout.split()


def _wait_for_exec(proc: subprocess.Popen[bytes], marker: str, timeout: float = 10.0) -> None:
    """Wait until the child's command line shows `marker`.

    Popen returns once the child has called exec, a moment before the kernel shows its new
    command line: /proc/<pid>/cmdline is empty in between, and on a busy machine that moment
    lasts long enough for `pid()` to take the node for dead (and `_terminate` to orphan it).
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if marker in _cmdline(proc.pid):
            return
        time.sleep(0.01)


def _tail(lines: list[str], count: int) -> str:
    return "\n".join(lines[-count:])


def _show(path: Path) -> str:
    """A path relative to the current directory when it is below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _cluster_id() -> str:
    """A fresh cluster id as ``kafka-storage random-uuid`` makes it, without starting a JVM."""
    while True:
        raw = secrets.token_bytes(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if int.from_bytes(raw, "big") > 1 and not text.startswith("-"):  # Kafka reserves 0 and 1
            return text


# --------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class Node:
    """One combined broker+controller process of a LocalKafka."""

    node_id: int  # 1-based, as in Kafka's node.id
    port: int
    controller_port: int
    dir: Path

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "kafka.pid"


class LocalKafka:
    """One or three Kafka nodes on 127.0.0.1, each broker and controller in one JVM.

    ``up()`` formats fresh data and starts; ``stop()``/``start()`` keep the data; ``down()`` stops.
    As a context manager it runs ``up()`` and, if it started the broker, ``down()`` at the end.
    Blocking calls (up, start, stop, ...) can be run from async code with ``asyncio.to_thread``.
    """

    def __init__(
        self,
        port: int | None = None,
        nodes: int | None = None,
        state_dir: Path | str | None = None,
        *,
        heap: str = "512m",
        overrides: Mapping[str, object] | None = None,
        ready_timeout: float = READY_TIMEOUT,
        verbose: bool = True,
        secure: bool | None = None,
    ) -> None:
        saved = self._read_state(Path(state_dir)) if state_dir is not None else {}
        if port is None:
            port = int(saved.get("port") or os.environ.get("KAFKA_PORT") or DEFAULT_PORT)
        self.port = port
        self.state_dir = Path(state_dir) if state_dir is not None else CACHE / f"run-{port}"
        if not saved:
            saved = self._read_state(self.state_dir)
        self.nodes = int(nodes or saved.get("nodes") or 1)
        if self.nodes not in (1, 3):
            raise KafkaToolError(f"nodes must be 1 or 3, not {self.nodes}")
        self.secure = bool(saved.get("secure", False) if secure is None else secure)
        self.heap = heap
        self.overrides = dict(overrides or {})  # extra server.properties, e.g. faster failover
        self.ready_timeout = ready_timeout
        self.verbose = verbose
        self.node_list = [
            Node(i + 1, bport, cport, self.state_dir / f"node-{i + 1}")
            for i, (bport, cport) in enumerate(node_ports(port, self.nodes))
        ]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}  # node id -> process we started
        self._started_here = False

    # ---------------------------------------------------------------- public API

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT[,127.0.0.1:PORT+2,...]`` for Kafka clients."""
        return ",".join(f"{HOST}:{node.port}" for node in self.node_list)

    @property
    def security(self) -> kafka_security.SecureSetup | None:
        """The CA file and logins of a secure broker (made by ``up``); None for plaintext."""
        return kafka_security.SecureSetup.load(self.state_dir) if self.secure else None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments an aiokafka client needs besides bootstrap_servers."""
        security = self.security
        return security.client_options() if security else {}

    def client_env(self) -> dict[str, str]:
        """The ``SAGA_*`` connection variables for saga processes using this broker."""
        security = self.security
        extra = security.client_env() if security else {}
        return {"SAGA_BOOTSTRAP_SERVERS": self.bootstrap_servers, **extra}

    def node(self, node_id: int) -> Node:
        """The node with this (1-based) node id."""
        return self.node_list[node_id - 1]

    def pid(self, node_id: int) -> int | None:
        """The pid of this node's running Kafka process (from its pid file), else None."""
        node = self.node(node_id)
        try:
            pid = int(node.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        args = _cmdline(pid)
        if "kafka.Kafka" not in args or str(node.properties) not in args:
            return None  # the pid was reused by something else
        return pid

    def running_nodes(self) -> list[int]:
        """Node ids whose Kafka process is alive."""
        return [n.node_id for n in self.node_list if self.pid(n.node_id) is not None]

    def is_running(self) -> bool:
        """True when every node's process is alive."""
        return len(self.running_nodes()) == self.nodes

    def up(self) -> bool:
        """Fetch if needed, format fresh data, start every node and wait until it is ready.

        Returns False (and does nothing) when this broker is already running.
        """
        with self._lock():
            saved = self._read_state(self.state_dir)
            saved_nodes = int(saved.get("nodes", self.nodes))
            saved_secure = bool(saved.get("secure", self.secure))
            if (saved_nodes, saved_secure) != (self.nodes, self.secure):
                previous = LocalKafka(self.port, saved_nodes, self.state_dir, verbose=False)
                if previous.running_nodes():
                    kind = "secure " if saved_secure else ""
                    raise KafkaToolError(
                        f"a {saved_nodes}-node {kind}Kafka from {_show(self.state_dir)} is "
                        f"running; run `down` first to start another kind"
                    )
            running = self.running_nodes()
            if len(running) == self.nodes:
                pids = ", ".join(str(self.pid(i)) for i in running)
                self._say(
                    f"Kafka is already running on {self.bootstrap_servers} (pid {pids}); "
                    "nothing to do"
                )
                return False
            if running:
                raise KafkaToolError(
                    f"only nodes {running} of the Kafka from {_show(self.state_dir)} are running; "
                    "run `down` first"
                )
            self._clear_stale_pid_files()
            lib = fetch(quiet=not self.verbose)
            java = java_executable()
            self._check_ports_free(self.node_list)
            started = time.monotonic()
            self._format(java, lib)
            self._started_here = True
            self._launch(self.node_list, java, lib, fresh_log=True)
            self._wait_ready(self.node_list, started)
            return True

    def start(self) -> None:
        """Start every node on its existing (formatted) data, e.g. after ``stop()``."""
        missing = [n.node_id for n in self.node_list if not (n.data / "meta.properties").is_file()]
        if missing:
            raise KafkaToolError(f"nodes {missing} have no formatted data: use up() first")
        to_start = [n for n in self.node_list if self.pid(n.node_id) is None]
        if not to_start:
            return
        java, lib = java_executable(), fetch(quiet=not self.verbose)
        self._check_ports_free(to_start)
        started = time.monotonic()
        self._launch(to_start, java, lib, fresh_log=False)
        self._wait_ready(to_start, started)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout`` s); the data stays."""
        self._terminate([n.node_id for n in self.node_list], signal.SIGTERM, timeout)

    def down(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop exactly the processes of the pid files. Returns False when none was running."""
        if not self.state_dir.is_dir():
            return False
        with self._lock():
            was_running = bool(self.running_nodes())
            self.stop(timeout)
            self._clear_stale_pid_files()
            self._started_here = False
            return was_running

    def kill_node(self, node_id: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Crash one node (SIGKILL by default; SIGTERM for a clean shutdown); its data stays."""
        self._terminate([node_id], sig, STOP_TIMEOUT)

    def start_node(self, node_id: int) -> None:
        """Start one stopped node on its data and wait until the cluster sees it again."""
        node = self.node(node_id)
        if self.pid(node_id) is not None:
            return
        java, lib = java_executable(), fetch(quiet=not self.verbose)
        self._check_ports_free([node])
        started = time.monotonic()
        self._launch([node], java, lib, fresh_log=False)
        self._wait_ready([node], started)

    def status(self) -> list[dict[str, Any]]:
        """One dict per node: node_id, pid (None when not running), port, controller_port, log."""
        return [
            {
                "node_id": n.node_id,
                "pid": self.pid(n.node_id),
                "port": n.port,
                "controller_port": n.controller_port,
                "listening": _listening(n.port),
                "log": str(n.log),
            }
            for n in self.node_list
        ]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of each node's log."""
        parts = []
        for node in self.node_list:
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            parts.append(f"--- last {lines} lines of {node.log}:")
            parts.append(_tail(text.splitlines(), lines))
        return "\n".join(parts)

    def __enter__(self) -> LocalKafka:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started_here:
            self.down()

    def __repr__(self) -> str:
        return f"LocalKafka({self.bootstrap_servers!r}, nodes={self.nodes}, {self.state_dir})"

    # ---------------------------------------------------------------- internals

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialise up/down of this state dir across processes."""
        return _file_lock(self.state_dir / ".lock")

    @staticmethod
    def _read_state(state_dir: Path) -> dict[str, Any]:
        try:
            state = json.loads((state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _clear_stale_pid_files(self) -> None:
        for node in self.node_list:
            if self.pid(node.node_id) is None:
                node.pid_file.unlink(missing_ok=True)

    def _check_ports_free(self, nodes: list[Node]) -> None:
        for node in nodes:
            for port in (node.port, node.controller_port):
                if not _port_free(port):
                    raise PortInUseError(
                        f"port {port} on {HOST} is in use by another process (see `ss -ltnp`); "
                        f"choose another base port with --port / KAFKA_PORT "
                        f"(`{Path(sys.executable).name} tools/local_kafka.py free-port` finds one)"
                    )

    def _server_properties(self, node: Node) -> str:
        replicas, min_isr = (1, 1) if self.nodes == 1 else (3, 2)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.node_list)
        # Clients and the other brokers use one listener (PLAINTEXT, or SASL_SSL when secure);
        # the controller listener stays plaintext on loopback.
        security = self.security
        name = kafka_security.LISTENER if security else "PLAINTEXT"
        settings = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"{name}://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": f"{name}://{HOST}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": name,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{name}:{name}",
            **(security.server_properties() if security else {}),
            "log.dirs": node.data,
            # Internal topics fit the cluster size; on one node the defaults (3 replicas, min ISR 2)
            # would make a transactional producer hang in InitProducerId.
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": self.nodes,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": self.nodes,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "share.coordinator.state.topic.num.partitions": self.nodes,
            # Topics created without a replication factor (auto-created ones too) use every node;
            # min.insync.replicas stays 1 so that a topic asked for with fewer replicas still works.
            "default.replication.factor": replicas,
            "group.initial.rebalance.delay.ms": 0,
            # A segment's index files are created sparse at this size and memory-mapped. Here
            # (ext4, read-ahead 8 MB) the first write to each read ahead megabytes of its holes
            # and zeroed them: with the default 10 MB, a third of the broker's CPU after three
            # benchmark runs on one broker, which then did 332-439 sagas/s instead of 493-615.
            # 1 MB still indexes ~350 MB of log per segment.
            "log.index.size.max.bytes": 1024 * 1024,
            **self.overrides,
        }
        header = f"# written by tools/local_kafka.py for node {node.node_id} of {self.nodes}\n"
        return header + "".join(f"{key}={value}\n" for key, value in settings.items())

    def _format(self, java: str, lib: Path) -> None:
        """Write fresh server.properties and format fresh log dirs with a new cluster id."""
        cluster_id = _cluster_id()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ours = {node.dir for node in self.node_list}
        for old in self.state_dir.glob("node-*"):  # left from an earlier run with more nodes
            if old not in ours:
                shutil.rmtree(old, ignore_errors=True)
        scram: list[str] = []
        if self.secure:
            security = kafka_security.create(self.state_dir / "tls")
            security.save(self.state_dir)
            scram = security.scram_arguments()
        for node in self.node_list:
            shutil.rmtree(node.data, ignore_errors=True)
            node.dir.mkdir(parents=True, exist_ok=True)
            node.properties.write_text(self._server_properties(node))
        procs = [
            (node, subprocess.Popen(
                [
                    java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", f"{lib}/*",
                    "kafka.tools.StorageTool", "format",
                    "-t", cluster_id, "-c", str(node.properties), *scram,
                ],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            ))
            for node in self.node_list
        ]  # fmt: skip
        for node, proc in procs:  # the nodes format in parallel
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise KafkaToolError(
                    f"formatting {node.data} failed:\n{output.decode(errors='replace')}"
                )
        state = {
            "port": self.port,
            "nodes": self.nodes,
            "secure": self.secure,
            "cluster_id": cluster_id,
            "kafka_version": kafka_version(),
            "bootstrap_servers": self.bootstrap_servers,
        }
        (self.state_dir / "cluster.json").write_text(json.dumps(state, indent=2) + "\n")

    def _launch(self, nodes: list[Node], java: str, lib: Path, *, fresh_log: bool) -> None:
        for node in nodes:
            cmd = [
                java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "-cp", f"{lib}/*", "kafka.Kafka", str(node.properties),
            ]  # fmt: skip
            with node.log.open("w" if fresh_log else "a") as log:
                log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(
                    cmd,
                    cwd=node.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the terminal of `up` does not reach it
                )
            self._procs[node.node_id] = proc
            node.pid_file.write_text(f"{proc.pid}\n")
            _wait_for_exec(proc, str(node.properties))

    def _wait_ready(self, nodes: list[Node], started: float) -> None:
        """Wait until the cluster metadata lists all nodes; on failure stop ``nodes``, show logs."""
        deadline = started + self.ready_timeout
        try:
            _run_in_thread(self._poll_metadata(nodes, deadline))
        except BaseException as exc:
            self._terminate([n.node_id for n in nodes], signal.SIGTERM, 10)
            for node in nodes:
                node.pid_file.unlink(missing_ok=True)
            if isinstance(exc, KafkaToolError):
                raise KafkaToolError(f"{exc}\n{self.log_tail(30)}") from None
            raise
        took = time.monotonic() - started
        logs = self.node_list[0].log if self.nodes == 1 else self.state_dir / "node-*" / "kafka.log"
        plural = "s" if self.nodes > 1 else ""
        self._say(
            f"Kafka {kafka_version()} ready on {self.bootstrap_servers} "
            f"({self.nodes} node{plural}) in {took:.1f} s; log: {_show(logs)}"
        )

    async def _poll_metadata(self, nodes: list[Node], deadline: float) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        quiet = logging.getLogger("aiokafka")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # refused connections while starting are expected
        last_error = "no answer yet"
        try:
            while True:
                for node in nodes:
                    if self.pid(node.node_id) is None:
                        raise KafkaToolError(
                            f"Kafka node {node.node_id} exited while starting (see {node.log})"
                        )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise KafkaToolError(
                        f"Kafka on {self.bootstrap_servers} not ready within "
                        f"{self.ready_timeout:.0f} s ({last_error})"
                    )
                if all(_listening(n.port) for n in nodes):
                    admin = AIOKafkaAdminClient(
                        bootstrap_servers=self.bootstrap_servers,
                        request_timeout_ms=5000,
                        **self.client_options(),
                    )
                    try:
                        await asyncio.wait_for(admin.start(), min(remaining, 10))
                        meta = await asyncio.wait_for(admin.describe_cluster(), min(remaining, 10))
                        seen = {broker["node_id"] for broker in meta["brokers"]}
                        if seen >= {n.node_id for n in self.node_list}:
                            return
                        last_error = f"metadata lists nodes {sorted(seen)}"
                    except Exception as exc:  # not up yet: try again until the deadline
                        last_error = f"{type(exc).__name__}: {exc}"
                    finally:
                        with contextlib.suppress(Exception):
                            await admin.close()
                await asyncio.sleep(0.2)
        finally:
            quiet.setLevel(level)

    def _terminate(self, node_ids: list[int], sig: signal.Signals, timeout: float) -> None:
        """Signal the nodes' processes, wait for them to exit, SIGKILL them at the deadline."""
        pids = {i: pid for i in node_ids if (pid := self.pid(i)) is not None}
        for node_id in node_ids:  # a process we started is ours even if its pid file is not
            proc = self._procs.get(node_id)
            if node_id not in pids and proc is not None and proc.poll() is None:
                pids[node_id] = proc.pid
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        for escalated in (False, True):
            while pids and time.monotonic() < deadline:
                for node_id, pid in list(pids.items()):
                    proc = self._procs.get(node_id)
                    if proc is not None and proc.pid == pid:
                        proc.poll()  # reap our own child, or it stays a zombie
                    if not _pid_alive(pid):
                        del pids[node_id]
                time.sleep(0.05)
            if not pids or escalated:
                break
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        if pids:
            raise KafkaToolError(f"Kafka processes {sorted(pids.values())} did not exit")
        for node_id in node_ids:
            self.node(node_id).pid_file.unlink(missing_ok=True)
            proc = self._procs.pop(node_id, None)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)


def _run_in_thread(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop in its own thread.

    This keeps the caller's event loop (e.g. pytest-asyncio's) untouched, whether or not one runs.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="local-kafka-ready", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


# --------------------------------------------------------------------------- command line


def _print_status(kafka: LocalKafka, out: IO[str]) -> bool:
    if not kafka.state_dir.exists():
        print(f"no Kafka state in {_show(kafka.state_dir)}: not running", file=out)
        return False
    running = True
    for item in kafka.status():
        pid = item["pid"]
        running = running and pid is not None
        state = f"running (pid {pid})" if pid else "stopped"
        listening = "listening" if item["listening"] else "not listening"
        print(
            f"node {item['node_id']}: {state}, {HOST}:{item['port']} {listening}, "
            f"controller :{item['controller_port']}, log {_show(Path(item['log']))}",
            file=out,
        )
    if running:
        print(f"bootstrap servers: {kafka.bootstrap_servers}", file=out)
    return running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local_kafka.py",
        description="Run a real Apache Kafka broker (KRaft, from Maven Central) on 127.0.0.1.",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "fetch", "free-port"],
        help="up: fetch once, format, start, wait until ready; down: stop what up started; "
        "status: exit 0 when every node runs; fetch: only fetch the jars; "
        "free-port: print a base port whose derived ports are free",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="broker port of node 1 (default $KAFKA_PORT or 9092)"
    )
    parser.add_argument(
        "--nodes",
        type=int,
        choices=[1, 3],
        default=None,
        help="number of nodes (default 1; down/status read it from the state dir)",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="default <repo>/.cache/kafka/run-<port>"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="up: serve clients over SASL_SSL (SCRAM users, a local CA) and print the SAGA_* "
        "variables a client needs",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            fetch()
            print(f"Kafka {kafka_version()} jars in {_show(LIB)}")
            return 0
        if args.command == "free-port":
            print(free_port(args.nodes or 1))
            return 0
        nodes = (args.nodes or 1) if args.command == "up" else args.nodes
        secure = args.secure if args.command == "up" else None
        kafka = LocalKafka(args.port, nodes, args.state_dir, secure=secure)
        if args.command == "up":
            kafka.up()
            if kafka.secure:
                print("a client needs (the password is also in secure.json of the state dir):")
                print("\n".join(f"export {k}={v}" for k, v in kafka.client_env().items()))
            if os.environ.get("MAKELEVEL"):  # run by make
                print(f"stop it with: make kafka-down KAFKA_PORT={kafka.port}")
            else:
                python = Path(sys.executable).name
                print(f"stop it with: {python} tools/local_kafka.py down --port {kafka.port}")
            return 0
        if args.command == "down":
            if kafka.down():
                print(f"Kafka on {kafka.bootstrap_servers} stopped")
            else:
                print(f"no Kafka running from {_show(kafka.state_dir)} (port {kafka.port})")
            return 0
        return 0 if _print_status(kafka, sys.stdout) else 1
    except KafkaToolError as exc:
        print(f"local_kafka: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
