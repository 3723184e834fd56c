"""Saga versions across real redeploys: each saga ends on the version it started with.

One worker is redeployed with other `--sagas` on the same port (so the same static member
takes its partitions back at once); the participants run from a module with the public API.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from services import Service, http_json

from tests.integration.saga_system import FINISHED, Deadline, SagaSystem, eventually

V1 = "tests.integration.parcels.v1"
V2 = "tests.integration.parcels.v2"
PARTICIPANTS = [
    "tests.integration.parcels.services:packer",
    "tests.integration.parcels.services:shipper",
]


class Deployment:
    """A SagaSystem whose worker and participants are started and stopped by the test."""

    def __init__(self, system: SagaSystem, deadline: Deadline) -> None:
        self.system = system
        self.deadline = deadline
        """Shared by every wait of the test: five redeploys in a row must fit its timeout."""
        [worker] = system.workers
        self.worker_port = worker.port
        self.participants: Service | None = None

    def deploy(self, *modules: str) -> None:
        """Replace the worker by one running `modules`, on the same port and data dir."""
        self.system.workers[0].stop()
        args = ["--sagas", ",".join(modules)]
        worker = Service("worker", self.system.env, self.system.workdir, name="worker-0",
                         port=self.worker_port, args=args)  # fmt: skip
        ready = self.deadline.left(f"a worker running {modules}")
        self.system.workers[0] = worker.start().wait_ready(ready)

    def run_participants(self) -> None:
        self.participants = Service(
            "participant", self.system.env, self.system.workdir, name="parcels", args=PARTICIPANTS
        ).start().wait_ready(self.deadline.left("the participants"))  # fmt: skip

    def stop_participants(self) -> None:
        if self.participants is not None:
            self.participants.stop()

    def start(self, saga_id: str) -> str:
        return self.system.start_saga("ship_parcel", {}, saga_id)

    def wait_until(self, saga_id: str, condition: Callable[[dict[str, Any]], bool]) -> Any:
        return self.system.wait_until(saga_id, condition, self.deadline.left(saga_id))

    def wait_for(self, saga_id: str, statuses: frozenset[str] = FINISHED) -> Any:
        return self.system.wait_for(saga_id, statuses, self.deadline.left(saga_id))

    def metric(self, name: str) -> float:
        _, text = http_json("GET", f"{self.system.url}/metrics")
        lines = [line for line in str(text).splitlines() if line.startswith(name)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path, deadline: Deadline) -> Iterator[Deployment]:
    system = SagaSystem(kafka_bootstrap, tmp_path, f"v{uuid.uuid4().hex[:8]}.")
    deployment = Deployment(system, deadline)
    yield deployment
    deployment.stop_participants()
    system.workers[0].stop()


def waiting_at_pack(saga: dict[str, object]) -> bool:
    return saga["status"] == "in_progress"


def test_sagas_in_flight_end_on_their_version_and_a_missing_version_fails_until_it_returns(
    deployment: Deployment,
) -> None:
    """v1 sagas in flight end on v1 under v1+v2 while new ones get v2; under v2 only a v1 saga
    fails naming version 1, and a retry completes it once v1 is deployed again."""
    system = deployment.system
    deployment.deploy(V1)  # no participants yet: the v1 sagas wait at their first step
    early = [deployment.start(f"early-{i}") for i in range(2)]
    for saga_id in early:
        assert deployment.wait_until(saga_id, waiting_at_pack)["version"] == 1

    deployment.deploy(V1, V2)
    deployment.run_participants()
    for saga_id in early:
        saga = deployment.wait_for(saga_id)
        assert (saga["status"], saga["version"], len(saga["steps"])) == ("completed", 1, 1)
    fresh = deployment.wait_for(deployment.start("fresh"))
    assert (fresh["status"], fresh["version"], len(fresh["steps"])) == ("completed", 2, 2)

    deployment.stop_participants()
    deployment.deploy(V1)
    stranded = deployment.start("stranded")
    assert deployment.wait_until(stranded, waiting_at_pack)["version"] == 1
    deployment.deploy(V2)  # v1 is gone; the participant's reply arrives for a v1 saga
    deployment.run_participants()
    failed = deployment.wait_for(stranded)
    assert failed["status"] == "failed"
    assert failed["error"] == (
        "ship_parcel version 1 is not loaded on this worker (loaded versions: 2); "
        "deploy version 1 and retry the saga"
    )
    missing = eventually(
        lambda: deployment.metric("saga_definition_missing_total"), lambda n: n >= 1, "counted"
    )
    assert missing == 1.0

    deployment.deploy(V1, V2)
    status, _ = http_json("POST", f"{system.url}/sagas/{stranded}/retry", {})
    assert status == 202
    resumed = deployment.wait_for(stranded, frozenset({"completed"}))
    assert (resumed["version"], resumed["context"]["box"]) == (1, f"box-{stranded}")
    assert [e["event"] for e in resumed["history"]] == [
        "saga_started", "step_started", "saga_failed",
        "saga_retried", "step_started", "step_succeeded", "saga_completed",
    ]  # fmt: skip
