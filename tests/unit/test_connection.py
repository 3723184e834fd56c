"""Connection settings: validated when read, translated once for aiokafka and for Faust."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError
from aiokafka.partitioner import DefaultPartitioner

from saga_app import cli
from saga_app.connection import aiokafka_options
from saga_app.errors import ClusterMismatch
from saga_app.kafka_io import faust_credentials, make_faust_app, remembered_partitioner
from saga_app.settings import Settings
from saga_app.topology import check_partitions, min_insync_replicas, replication_factor_for

SASL = {
    "SAGA_SECURITY_PROTOCOL": "SASL_SSL",
    "SAGA_SASL_MECHANISM": "SCRAM-SHA-512",
    "SAGA_SASL_USERNAME": "saga",
    "SAGA_SASL_PASSWORD": "s3cret-pw",
}


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real self-signed CA certificate (aiokafka's SSL context loads it)."""
    folder = tmp_path_factory.mktemp("ca")
    key, cert = folder / "ca.key", folder / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=test-ca", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert)


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol() -> None:
    """Without SAGA_SECURITY_* variables clients connect over PLAINTEXT, with no credentials."""
    settings = Settings.from_env({"SAGA_BOOTSTRAP_SERVERS": "a:1,b:2"})
    assert aiokafka_options(settings) == {
        "bootstrap_servers": "a:1,b:2",
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(settings) is None


def test_sasl_ssl_maps_to_aiokafka_options_with_a_verifying_ssl_context(cafile: str) -> None:
    """SASL_SSL gives aiokafka the mechanism, the login and a context that checks the host."""
    options = aiokafka_options(Settings.from_env({**SASL, "SAGA_SSL_CAFILE": cafile}))
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "saga",
        "sasl_plain_password": "s3cret-pw",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_faust_gets_the_same_protocol_and_login_through_its_credentials(cafile: str) -> None:
    """Faust's SASLCredentials carry SASL_SSL, the mechanism and the login to its clients."""
    credentials = faust_credentials(Settings.from_env({**SASL, "SAGA_SSL_CAFILE": cafile}))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("saga", "s3cret-pw")
    sasl_plaintext = {**SASL, "SAGA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    plain = faust_credentials(Settings.from_env(sasl_plaintext))
    assert isinstance(plain, faust.SASLCredentials)
    assert plain.protocol.value == "SASL_PLAINTEXT"
    tls = faust_credentials(
        Settings.from_env({"SAGA_SECURITY_PROTOCOL": "SSL", "SAGA_SSL_CAFILE": cafile})
    )
    assert isinstance(tls, faust.SSLCredentials)


def test_the_password_never_shows_in_repr(tmp_path: Path) -> None:
    """Neither the settings nor the Faust app's credentials print the password."""
    settings = Settings.from_env(SASL)
    assert "s3cret-pw" not in repr(settings)
    app = make_faust_app(
        Settings.from_env({**SASL, "SAGA_DATA_DIR": str(tmp_path)}), "saga-orchestrator"
    )
    assert "s3cret-pw" not in repr(app.conf.broker_credentials)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SAGA_SECURITY_PROTOCOL": "TLS"}, "SAGA_SECURITY_PROTOCOL must be one of"),
        ({**SASL, "SAGA_SASL_MECHANISM": "GSSAPI"}, "SAGA_SASL_MECHANISM must be one of"),
        ({**SASL, "SAGA_SASL_PASSWORD": ""}, "needs SAGA_SASL_PASSWORD"),
        (
            {"SAGA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "needs SAGA_SASL_USERNAME and SAGA_SASL_PASSWORD",
        ),
        ({"SAGA_SASL_USERNAME": "saga"}, "set it to SASL_SSL"),
        ({"SAGA_SSL_CAFILE": "/etc/hostname"}, "set it to SSL or SASL_SSL"),
        ({"SAGA_SECURITY_PROTOCOL": "SSL", "SAGA_SSL_CAFILE": "/nope.pem"}, "not a readable"),
        ({"SAGA_REPLICATION_FACTOR": "-1"}, "SAGA_REPLICATION_FACTOR"),
    ],
)
def test_settings_that_cannot_connect_are_refused_saying_what_to_set(
    env: dict[str, str], message: str
) -> None:
    """An unknown protocol or mechanism, or SASL without a login, fails when Settings is built."""
    with pytest.raises(ValueError, match=message) as raised:
        Settings.from_env(env)
    assert "s3cret-pw" not in str(raised.value)


def test_protocol_and_mechanism_are_case_insensitive() -> None:
    """`sasl_ssl` and `scram-sha-256` are read as SASL_SSL and SCRAM-SHA-256."""
    env = {
        **SASL,
        "SAGA_SECURITY_PROTOCOL": "sasl_plaintext",
        "SAGA_SASL_MECHANISM": "scram-sha-256",
    }
    settings = Settings.from_env(env)
    assert (settings.security_protocol, settings.sasl_mechanism) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
    )


def test_worker_id_defaults_to_host_and_port_and_names_the_static_member(tmp_path: Path) -> None:
    """The static group instance id is the role plus SAGA_WORKER_ID (default host-port)."""
    import socket

    settings = Settings(web_port=7001, data_dir=str(tmp_path))
    assert settings.worker_id == f"{socket.gethostname()}-7001"
    app = make_faust_app(Settings(worker_id="blue-1", data_dir=str(tmp_path)), "saga-orchestrator")
    assert app.conf.consumer_group_instance_id == "saga-orchestrator-blue-1"


def test_round_and_batch_sizes_reach_the_kafka_clients(tmp_path: Path) -> None:
    """The producer gets 1 MB batches, the consumer hands over at most 200 records per fetch;
    a round size of 0 leaves the fetch unbounded."""
    app = make_faust_app(Settings(data_dir=str(tmp_path)), "saga-orchestrator")
    assert app.producer._settings_default()["max_batch_size"] == 1_000_000
    assert app.conf.broker_max_poll_records == 200
    unbounded = Settings(data_dir=str(tmp_path), round_records=0, producer_batch_bytes=65536)
    app = make_faust_app(unbounded, "saga-orchestrator")
    assert app.conf.broker_max_poll_records is None
    assert app.producer._settings_default()["max_batch_size"] == 65536


def test_the_producer_partitions_every_key_as_kafkas_default_partitioner_does() -> None:
    """Remembering hashes changes no record's partition: a saga's messages and state share one."""
    reference = DefaultPartitioner()
    for n in range(2_000):
        key = f"saga-{n}-{'x' * (n % 40)}".encode()
        for count in (1, 3, 8, 12):
            partitions = list(range(count))
            expected = reference(key, partitions, partitions)
            assert remembered_partitioner(key, partitions, partitions) == expected
            assert remembered_partitioner(key, partitions, partitions) == expected  # remembered
    assert remembered_partitioner(None, [0, 1, 2], [1]) == 1, "no key: an available partition"


@pytest.mark.parametrize(
    ("configured", "brokers", "expected", "min_isr"),
    [(0, 1, 1, 1), (0, 2, 1, 1), (0, 3, 3, 2), (0, 5, 3, 2), (2, 5, 2, 1), (5, 5, 5, 4)],
)
def test_replication_factor_is_three_on_three_brokers_unless_set(
    configured: int, brokers: int, expected: int, min_isr: int
) -> None:
    """By default topics get 3 replicas on a cluster of 3+ brokers, else 1; min ISR is RF - 1."""
    settings = Settings(replication_factor=configured)
    assert replication_factor_for(settings, brokers) == expected
    assert min_insync_replicas(expected) == min_isr


def test_a_topic_with_another_partition_count_is_named_with_both_counts() -> None:
    """check_partitions names the topic, its count and SAGA_PARTITIONS."""
    settings = Settings(partitions=8)
    check_partitions(settings, {"a": 8, "b": 8})
    with pytest.raises(ClusterMismatch, match="topic b has 4 partitions but SAGA_PARTITIONS is 8"):
        check_partitions(settings, {"a": 8, "b": 4})


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (NodeNotReadyError(), "NodeNotReadyError"),
        (TimeoutError(), "TimeoutError"),
        (
            KafkaConnectionError("Connection at b1:9092 closed"),
            "KafkaConnectionError: Connection at b1:9092 closed",
        ),
    ],
)
def test_a_failed_start_always_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception, said: str
) -> None:
    """Errors without a message (aiokafka's often have none) are named, not printed empty."""

    def fail(*args: object, **kwargs: object) -> int:
        raise error

    monkeypatch.setattr(cli, "run_worker", fail)
    assert cli.main(["worker"]) == 1
    assert capsys.readouterr().err.strip() == f"saga worker: cannot start: {said}"
