"""Your own Kafka cluster: saga processes on a SASL_SSL broker, and clear, fast refusals when the
login, the CA or the topics do not fit."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kafka_security
import local_kafka
import pytest
from services import Service

from saga_app.registry import EXAMPLES, load_sagas
from saga_app.settings import Settings
from saga_app.topology import ensure_topics, worker_topics
from tests.integration.saga_system import SagaSystem
from tests.integration.test_sagas import order

EXIT_DEADLINE = 30.0
pytestmark = pytest.mark.timeout(240)
"""Over the suite's 120 s: whichever test here runs first also starts the module's SASL_SSL broker
(a CA, certificates, then up to BROKER_READY_TIMEOUT) and, for the first, a saga system."""


def exit_of(service: Service, timeout: float = EXIT_DEADLINE) -> tuple[int, float, str]:
    """Wait for a started service to exit: (exit code, seconds it took, its log)."""
    assert service.process is not None
    started = time.monotonic()
    try:
        code = service.process.wait(timeout)
    except subprocess.TimeoutExpired:
        service.stop()
        pytest.fail(f"{service.name} still running after {timeout:.0f} s:\n{service.tail()}")
    return code, time.monotonic() - started, service.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def secure_system(
    secure_kafka: local_kafka.LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SagaSystem]:
    system = SagaSystem(
        secure_kafka.bootstrap_servers,
        tmp_path_factory.mktemp("secure-sagas"),
        f"s{uuid.uuid4().hex[:8]}.",
        env=secure_kafka.client_env(),
    ).start()
    yield system
    system.stop()


def test_sagas_complete_and_compensate_over_sasl_ssl(secure_system: SagaSystem) -> None:
    """A worker and the participants on a SASL_SSL broker run one saga to completion and
    compensate another, with the password nowhere in their logs."""
    done = secure_system.start_saga("create_order", order(), f"ok-{uuid.uuid4().hex[:8]}")
    failed = secure_system.start_saga(
        "create_order", order({"charge_payment": "fail"}), f"comp-{uuid.uuid4().hex[:8]}"
    )
    assert secure_system.wait_for(done)["status"] == "completed"
    assert secure_system.wait_for(failed)["status"] == "compensated"
    assert [e["event"] for e in secure_system.events_of(done)][-1] == "saga_completed"
    password = secure_system.env["SAGA_SASL_PASSWORD"]
    for service in [secure_system.participants, *secure_system.workers]:
        assert password not in service.log_path.read_text(errors="replace")


@pytest.mark.parametrize("role", ["worker", "participants"])
def test_a_wrong_password_exits_quickly_saying_authentication_failed(
    role: str, secure_kafka: local_kafka.LocalKafka, tmp_path: Path
) -> None:
    """`saga worker`/`participants` with a wrong password exit non-zero within 30 s, saying so."""
    env = {**secure_kafka.client_env(), "SAGA_SASL_PASSWORD": "not-the-password"}
    code, took, log = exit_of(Service(role, env, tmp_path).start())
    assert code != 0, log
    assert "authentication failed" in log and "SAGA_SASL_PASSWORD" in log, log
    assert "Traceback" not in log, log
    print(f"{role} with a wrong password exited {code} after {took:.1f} s")


def test_an_untrusted_ca_exits_quickly_saying_the_certificate_is_not_trusted(
    secure_kafka: local_kafka.LocalKafka, tmp_path: Path
) -> None:
    """A worker given a CA that did not sign the broker's certificate exits non-zero within 30 s,
    saying the certificate is not trusted."""
    _, other_ca, _ = kafka_security.make_ca(tmp_path / "other-ca", name="someone else's CA")
    env = {**secure_kafka.client_env(), "SAGA_SSL_CAFILE": str(other_ca)}
    code, took, log = exit_of(Service("worker", env, tmp_path).start())
    assert code != 0, log
    assert "not trusted" in log and "SAGA_SSL_CAFILE" in log, log
    assert "Traceback" not in log, log
    print(f"worker with an untrusted CA exited {code} after {took:.1f} s")


def test_a_worker_refuses_topics_with_another_partition_count(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker whose SAGA_PARTITIONS differs from its existing topics exits non-zero, naming a
    topic and both counts."""
    prefix = f"p{uuid.uuid4().hex[:8]}."
    existing = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    asyncio.run(ensure_topics(existing, worker_topics(existing, load_sagas([EXAMPLES]))))
    env = {
        "SAGA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SAGA_TOPIC_PREFIX": prefix,
        "SAGA_PARTITIONS": "3",
    }
    code, _, log = exit_of(Service("worker", env, tmp_path).start())
    assert code != 0, log
    assert f"topic {prefix}" in log and "has 2 partitions but SAGA_PARTITIONS is 3" in log, log
