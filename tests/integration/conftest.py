"""Integration tests run against a real Apache Kafka broker.

``kafka_bootstrap`` is ``$SAGA_BOOTSTRAP_SERVERS`` when that is set; otherwise the session starts
its own single-node broker (``tools/local_kafka.py``) on free ports, with its state under pytest's
tmp dir, and stops it at the end, also when tests fail or the run is interrupted.
Every test in this folder is marked ``integration`` (deselect with ``-m "not integration"``).
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import local_kafka
import pytest

from tests.integration.saga_system import Deadline

HERE = Path(__file__).resolve().parent
STARTED = pytest.StashKey[float]()
"""When a test's setup began (its pytest timeout counts from about then, fixtures included)."""
STOP_MARGIN = 20.0
"""Seconds of a test's pytest timeout that `deadline` keeps back for stopping its processes."""
BROKER_READY_TIMEOUT = 90.0
"""Seconds a broker the tests start may take to be ready. local_kafka's 60 s default is for a
person at a terminal: a JVM on a 2-core machine with a core kept busy took 38 s, and more when
other test runs share the machine. Tests that start their own brokers raise their timeouts."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[STARTED] = time.monotonic()


def timeout_of(item: pytest.Item) -> float | None:
    """The test's pytest timeout: its `timeout` marker, else --timeout, else the ini setting."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(value) if value else None


@pytest.fixture
def deadline(request: pytest.FixtureRequest) -> Deadline:
    """What is left of this test's pytest timeout, less STOP_MARGIN, for waits made one after
    another: each takes `deadline.left("what")`, so a slow run fails at the wait that was slow,
    with its own message, before pytest-timeout kills the test and its teardown."""
    timeout = timeout_of(request.node)
    if timeout is None:
        return Deadline(3600)  # no pytest timeout: only a bound on a stuck run
    started = request.node.stash.get(STARTED, time.monotonic())
    return Deadline(started + timeout - STOP_MARGIN - time.monotonic())


def _start_local_kafka(
    state_dir: Path, nodes: int = 1, secure: bool = False
) -> local_kafka.LocalKafka:
    """Up a LocalKafka on free ports (retrying if another process takes them first)."""
    for attempt in range(3):
        kafka = local_kafka.LocalKafka(
            local_kafka.free_port(nodes),
            nodes,
            state_dir / f"kafka-{attempt}",
            secure=secure,
            ready_timeout=BROKER_READY_TIMEOUT,
        )
        atexit.register(kafka.down)  # for exits that skip fixture teardown
        try:
            kafka.up()
        except local_kafka.PortInUseError:
            continue
        except local_kafka.KafkaToolError as exc:
            pytest.fail(f"could not start the local Kafka broker:\n{exc}", pytrace=False)
        return kafka
    pytest.fail("no free ports for the local Kafka broker after 3 attempts", pytrace=False)


def _sigterm_unwinds() -> None:
    """Turn SIGTERM (e.g. a CI timeout) into KeyboardInterrupt, so fixture teardown still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's Kafka (``host:port[,host:port...]``)."""
    external = os.environ.get("SAGA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    _sigterm_unwinds()
    kafka = _start_local_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.down()


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kafka.LocalKafka]:
    """A private single-node broker serving SASL_SSL (SCRAM, a local CA), shared by a module."""
    _sigterm_unwinds()
    kafka = _start_local_kafka(tmp_path_factory.mktemp("secure-kafka"), secure=True)
    try:
        yield kafka
    finally:
        kafka.down()


@pytest.fixture
def kafka_factory(tmp_path: Path) -> Iterator[Callable[..., local_kafka.LocalKafka]]:
    """Start extra, private clusters: ``kafka_factory(nodes=1)`` -> a running LocalKafka.

    For tests that stop, restart or kill brokers without disturbing the session's broker;
    every cluster made here is taken down when the test ends. ``secure=True`` serves SASL_SSL
    (its ``client_env()`` / ``client_options()`` hold what clients need).
    """
    made: list[local_kafka.LocalKafka] = []

    def make(nodes: int = 1, secure: bool = False) -> local_kafka.LocalKafka:
        kafka = _start_local_kafka(tmp_path / f"cluster-{len(made)}", nodes, secure)
        made.append(kafka)
        return kafka

    try:
        yield make
    finally:
        for kafka in made:
            kafka.down()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names no other test (or earlier run) uses: ``unique_name("orders")`` for topics, groups..."""
    test = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:100]

    def make(kind: str = "t") -> str:
        return f"{test}.{kind}.{uuid.uuid4().hex[:10]}"

    return make
