"""Sagas in flight across deploys: each finishes on the definition version it started with."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from saga_app.engine import decide, definition_missing
from saga_app.metrics import SagaMetrics
from saga_app.orchestrator import Orchestrator
from saga_app.record import Record
from saga_app.registry import SagaRegistry
from saga_app.state import SagaStatus
from tests.unit.fixtures.parcel_sagas import SHIP_PARCEL_V1, SHIP_PARCEL_V2
from tests.unit.test_orchestrator import CATALOG, DictStore, ListPublisher
from topics import Reply, StartSaga

V1_ONLY = SagaRegistry([SHIP_PARCEL_V1])
V2_ONLY = SagaRegistry([SHIP_PARCEL_V2])
BOTH = SagaRegistry([SHIP_PARCEL_V1, SHIP_PARCEL_V2])


class Deploy:
    """One store and producer that outlive the workers: a worker is a registry over them."""

    def __init__(self) -> None:
        self.store = DictStore()
        self.publisher = ListPublisher()
        self.metrics = SagaMetrics(CollectorRegistry())
        self.offset = 0

    def worker(self, sagas: SagaRegistry) -> Orchestrator:
        return Orchestrator(CATALOG, sagas, self.store, self.publisher, self.metrics)

    async def feed(self, worker: Orchestrator, topic: str, saga_id: str, body: Any) -> None:
        self.offset += 1
        value = json.dumps(body).encode()
        await worker.handle(Record(topic, 0, self.offset, saga_id.encode(), value, 1000.0))

    async def start(self, worker: Orchestrator, saga_id: str) -> None:
        body = {"type": "start", "saga_id": saga_id, "saga_type": "ship_parcel"}
        await self.feed(worker, CATALOG.requests, saga_id, body)

    async def reply(self, worker: Orchestrator, command: dict[str, Any], outcome: str) -> None:
        body = {
            "message_id": f"{command['message_id']}:reply",
            "in_reply_to": command["message_id"],
            **{k: command[k] for k in ("saga_id", "step", "kind", "attempt")},
            "outcome": outcome,
        }
        await self.feed(worker, CATALOG.replies, command["saga_id"], body)

    def commands(self, participant: str) -> list[dict[str, Any]]:
        return self.publisher.to(CATALOG.commands(participant))


async def test_a_saga_in_flight_finishes_on_its_version_and_new_ones_start_on_the_newest() -> None:
    """v1 in flight, then a worker with v1 and v2: v1 ends after one step, new sagas get two."""
    deploy = Deploy()
    await deploy.start(deploy.worker(V1_ONLY), "old")
    [pack_old] = deploy.commands("packer")
    upgraded = deploy.worker(BOTH)
    await deploy.reply(upgraded, pack_old, "success")
    assert deploy.store.states["old"].status == SagaStatus.COMPLETED
    assert deploy.store.states["old"].version == 1
    await deploy.start(upgraded, "new")
    await deploy.reply(upgraded, deploy.commands("packer")[-1], "success")
    assert deploy.store.states["new"].version == 2
    assert [c["saga_id"] for c in deploy.commands("shipper")] == ["new"]


async def test_a_saga_whose_version_is_gone_fails_naming_it_then_resumes_on_retry() -> None:
    """With v2 only, a v1 saga fails and says so; once v1 is back, a retry completes it on v1."""
    deploy = Deploy()
    await deploy.start(deploy.worker(V1_ONLY), "old")
    [pack] = deploy.commands("packer")

    await deploy.reply(deploy.worker(V2_ONLY), pack, "success")
    failed = deploy.store.states["old"]
    assert failed.status == SagaStatus.FAILED
    assert failed.error == (
        "ship_parcel version 1 is not loaded on this worker (loaded versions: 2); "
        "deploy version 1 and retry the saga"
    )
    missing = deploy.metrics.registry.get_sample_value(
        "saga_definition_missing_total", {"saga_type": "ship_parcel", "version": "1"}
    )
    assert missing == 1.0
    assert deploy.publisher.to(CATALOG.events)[-1]["event"] == "saga_failed"

    await deploy.feed(deploy.worker(V2_ONLY), CATALOG.requests, "old", _retry("old"))
    assert deploy.store.states["old"].status == SagaStatus.FAILED  # v1 still missing: no change

    restored = deploy.worker(BOTH)
    await deploy.reply(restored, pack, "success")  # the reply replayed after the redeploy
    assert deploy.store.states["old"].status == SagaStatus.FAILED  # waits for the operator
    await deploy.feed(restored, CATALOG.requests, "old", _timeout(pack))  # a replayed timer
    assert deploy.store.states["old"].status == SagaStatus.FAILED
    await deploy.feed(restored, CATALOG.requests, "old", _retry("old"))
    resent = deploy.commands("packer")[-1]
    assert resent == pack  # the same attempt, same message id: the participant's store answers
    assert deploy.store.states["old"].status == SagaStatus.IN_PROGRESS
    await deploy.reply(restored, resent, "success")
    done = deploy.store.states["old"]
    assert (done.status, done.version, done.error) == (SagaStatus.COMPLETED, 1, None)
    assert deploy.commands("shipper") == []


def test_a_finished_saga_without_its_definition_is_left_alone() -> None:
    """Only running sagas are failed: a completed one ignores late events."""
    reply = Reply(
        message_id="m", in_reply_to="x:pack:command:1", saga_id="x", step="pack",
        kind="command", attempt=1, outcome="success",
    )  # fmt: skip
    started = decide(
        SHIP_PARCEL_V1, None, StartSaga(saga_id="x", saga_type="ship_parcel"), 1.0, reply_to="r"
    )
    assert started.state is not None
    completed = decide(SHIP_PARCEL_V1, started.state, reply, 2.0, reply_to="r").state
    assert completed is not None and completed.status == SagaStatus.COMPLETED
    decision = definition_missing(completed, reply, 3.0, loaded=[2])
    assert decision.ignored == "definition_missing"
    assert decision.state is completed


def _retry(saga_id: str) -> dict[str, Any]:
    return {"type": "retry", "saga_id": saga_id}


def _timeout(command: dict[str, Any]) -> dict[str, Any]:
    coordinates = {k: command[k] for k in ("saga_id", "step", "kind", "attempt")}
    return {"type": "timeout", "timer": "step", "due_at": 0.0, **coordinates}
