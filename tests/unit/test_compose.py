"""docker-compose.yml runs the same system as a local run: Kafka, two workers, the participants,
the choreography services."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from saga_app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SAGA_SERVICES = ("worker-1", "worker-2", "participants", "services")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def test_compose_runs_kafka_two_workers_the_participants_and_services(
    compose: dict[str, Any],
) -> None:
    """The file declares the official Kafka image and the four saga processes."""
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert [services[name]["command"] for name in SAGA_SERVICES] == [
        ["saga", "worker"],
        ["saga", "worker"],
        ["saga", "participants"],
        ["saga", "services"],
    ]


def test_every_saga_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    """Each SAGA_* variable names a Settings field and parses, so none is silently ignored."""
    fields = {f"SAGA_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    for name in SAGA_SERVICES:
        env = env_of(compose["services"][name])
        saga_vars = {k for k in env if k.startswith("SAGA_")}
        assert saga_vars <= fields, saga_vars - fields
        Settings.from_env(env)


def test_workers_have_their_own_identity_and_reach_kafka(compose: dict[str, Any]) -> None:
    """Workers differ in web host, port and data volume, and use the broker's advertised address."""
    services = compose["services"]
    envs = [env_of(services[name]) for name in SAGA_SERVICES]
    assert len({(e["SAGA_WEB_HOST"], e["SAGA_WEB_PORT"]) for e in envs}) == len(envs)
    assert len({tuple(services[name]["volumes"]) for name in SAGA_SERVICES}) == len(envs)
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert all(f"PLAINTEXT://{e['SAGA_BOOTSTRAP_SERVERS']}" == advertised for e in envs)
    assert (REPO / services["worker-1"]["build"]).joinpath("Dockerfile").is_file()


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose is not installed here; the parsing tests above still check the file",
)
def test_docker_compose_accepts_the_file() -> None:
    """`docker compose config` validates the file where Docker Compose is available."""
    result = subprocess.run(
        ["docker", "compose", "config", "--quiet"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
